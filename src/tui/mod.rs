//! The interactive explorer (ratatui + crossterm on a tokio event loop).
//!
//! One-way flow: terminal event → keymap → `Action` → `App::update` (no I/O) → `ui::render(&App)`.
//! Background work (scan, statistics, comparisons) reports through the same action channel.
//! `app` holds what the screens share and dispatches to them, `screen` has one module per screen
//! (its state, commands, clicks and drawing), `jobs` is the registry of background work, `model`
//! derives what views show, `keymap` is the one key table, `ui` draws the frame around the screen
//! (title, status bar, popups) and the shared widgets, `event` runs the loop and the background
//! jobs, `export` is the `p` key's hook, `export_panel` the `x` key's panel.

pub mod app;
pub mod event;
pub mod export;
pub mod export_panel;
pub mod hits;
pub mod jobs;
pub mod keymap;
pub mod model;
pub mod screen;
pub mod ui;

pub use app::{Action, App, Options};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::Show;
use ratatui::crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;
use std::io::{self, stdout, Stdout};
use std::path::PathBuf;

/// What `lorascope tui` was asked to show.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub cache: Option<PathBuf>,
    pub explicit_cache: bool,
    pub paths: Vec<PathBuf>,
    pub export_dir: Option<PathBuf>,
}

/// `NO_COLOR` (https://no-color.org): set and not empty means no colours.
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Puts the terminal back: mouse capture off, raw mode off, main screen, cursor shown.
/// ratatui's own restore leaves mouse capture on, so this one is used everywhere, panics included.
fn restore() {
    let mut out = stdout();
    let _ = execute!(out, DisableMouseCapture);
    let _ = disable_raw_mode();
    let _ = execute!(out, LeaveAlternateScreen, Show);
}

/// Restores the terminal when a panic happens on the UI thread. Background jobs catch their own
/// panics and show them in the status bar; printing those here would scribble over the screen.
fn install_panic_hook() {
    let ui = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui {
            restore();
            prev(info);
        }
    }));
}

/// The terminal in explorer mode; dropping it restores the terminal (errors and `?` included).
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        enable_raw_mode()?;
        install_panic_hook();
        let setup = execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)
            .and_then(|_| Terminal::new(CrosstermBackend::new(stdout())));
        match setup {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// How the explorer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The user quit.
    Quit,
    /// SIGTERM, SIGINT or SIGHUP arrived (its number): the terminal was restored first.
    Signal(i32),
}

/// SIGTERM, SIGINT and SIGHUP, caught. Without handlers these kill the process with the terminal
/// still raw, in the alternate screen, capturing the mouse; so they are installed before the
/// terminal changes or anything is drawn (a signal that comes at once must find them).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime's context).
    fn install() -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The number of the first signal to arrive.
    async fn first(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// Runs the explorer until the user quits or a termination signal arrives.
pub fn run(cfg: Config) -> anyhow::Result<Ended> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scanning = match (&cfg.cache, cfg.paths.is_empty()) {
        (Some(c), true) => format!("scanning {}", c.display()),
        _ => "looking for adapters".to_string(),
    };
    let mut app = App::new(Options {
        color: color_allowed(),
        export_dir: cfg.export_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
        scanning,
    });
    // Fetches go into the hub cache even when the demo cache is shown (`cache` is never it).
    app.fetch_cache = cfg.cache.clone();
    // The test hook pauses the process's first map: keep it for the computation a test drives,
    // not for a background health check that would map first.
    if std::env::var_os(crate::compute::tensor::PAUSE_ENV).is_none() {
        app.enable_health();
    }
    if !io::IsTerminal::is_terminal(&stdout()) {
        anyhow::bail!(
            "the explorer draws on a terminal, and stdout is not one; try `lorascope scan`"
        );
    }
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    let mut screen = TerminalGuard::enter().map_err(|e| {
        anyhow::anyhow!("the explorer needs a terminal ({e}); try `lorascope scan`")
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let result = rt.block_on(async {
        event::spawn_scan(
            &tx,
            event::ScanJob {
                cache: cfg.cache,
                explicit_cache: cfg.explicit_cache,
                paths: cfg.paths,
            },
        );
        tokio::select! {
            r = event::run_loop(&mut screen.terminal, &mut app, EventStream::new(), tx, rx) => {
                r.map(|_| Ended::Quit)
            }
            s = signals.first() => Ok(Ended::Signal(s)),
        }
    });
    // Dropping the screen restores the terminal, also when a signal ended the loop.
    drop(screen);
    // Cancelled jobs stop at their next delta; quitting does not wait for them.
    rt.shutdown_background();
    result.map_err(Into::into)
}
