//! Explorer timings (issue 4's targets), printed as a table:
//! 1. first frame after launch, and the full list, on the survey's cache (140 repos of real-size
//!    adapters, `lorascope::synth::survey`)
//!    (sparse files: headers are real, data are holes), the real binary in a pseudo-terminal;
//! 2. redraw per key press (App::update + a full frame through the crossterm backend), in-process;
//! 3. key latency while a large adapter's statistics compute, the real binary in a pseudo-terminal:
//!    from writing a key to the terminal receiving the frame that answers it;
//! 4. the same while the list's health column is computed over the survey's cache.
//!
//! Run: `cargo bench --bench tui` (needs util-linux `script`; figures in docs/performance.md).

#[path = "../tests/support/mod.rs"]
mod support;

use support::pty;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::synth::survey;
use lorascope::synth::{self, Dims, Item, Pattern, Spec};
use lorascope::tui::app::{Action, App, Effect, Options};
use lorascope::tui::event;
use lorascope::tui::keymap::Command;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const COLS: u16 = 120;
const ROWS: u16 = 36;
const WAIT: Duration = Duration::from_secs(30);

/// The survey's population (`lorascope::synth::survey`: 140 repos at gpt-oss-20b shapes, sparse), as
/// a hub cache. Returns (adapters listed, bytes of safetensors, the ids in the walk's order).
fn write_survey(root: &Path) -> (usize, u64, Vec<String>) {
    let repos = survey::repos();
    survey::write_cache(root, &repos).unwrap();
    let found = discovery::scan(&ScanRequest {
        cache: Some(root.to_path_buf()),
        ..Default::default()
    });
    let bytes = found.iter().map(|a| a.bytes()).sum();
    // In the walk's order: the first is the first row to arrive.
    let ids = found.iter().map(|a| a.id.clone()).collect();
    (support::survey_adapters(&repos), bytes, ids)
}

/// A large adapter: PEFT experts on all 24 layers at r = 32 per expert (1536 expert deltas)
/// plus rank-128 attention (96 deltas), real shapes. Sparse (zero data): the factored QR does
/// the same work on zeros (the Householder fallback, the slower path).
fn write_large(root: &Path) -> u64 {
    let mut s = Spec::new(
        Dims::GPT_OSS_20B,
        Pattern::PeftExperts {
            layers: (0..24).collect(),
        },
    );
    s.attn_rank = 128;
    s.expert_rank = 32;
    s.dtype = Dtype::BF16;
    s.sparse = true;
    synth::write_hub_repo(
        root,
        "bench/large",
        &[Item::Adapter {
            sub: String::new(),
            spec: s,
        }],
    )
    .unwrap();
    discovery::scan(&ScanRequest {
        cache: Some(root.to_path_buf()),
        ..Default::default()
    })[0]
        .bytes()
}

/// Counts the escape sequences a frame writes, and drops them.
struct Sink(usize);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, p99, max) in ms.
fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99), *v.last().unwrap())
}

fn spawn(bin: &Path, cache: &Path, home: &Path) -> pty::Pty {
    pty::Pty::spawn(
        bin,
        &["tui", "--cache", cache.to_str().unwrap()],
        &[("HOME", home), ("XDG_CACHE_HOME", &home.join("xdg"))],
        COLS,
        ROWS,
    )
}

/// `first_id`: the walk's first adapter, the first row to arrive (and the top row by id).
fn first_frame(bin: &Path, cache: &Path, home: &Path, n: usize, first_id: &str) {
    let (mut first, mut rows, mut list) = (vec![], vec![], vec![]);
    for _ in 0..9 {
        let mut p = spawn(bin, cache, home);
        let t_first = p.wait_for("lorascope", WAIT).expect("first frame");
        let t_rows = p.wait_for(first_id, WAIT).expect("the first row");
        rows.push(ms(t_rows - p.started));
        let t_list = p
            .wait_for(&format!("{n} adapters"), WAIT)
            .expect("the list");
        first.push(ms(t_first - p.started));
        list.push(ms(t_list - p.started));
        p.send(b"q");
        assert!(p.wait(WAIT).is_some_and(|s| s.success()));
    }
    let (f50, _, fmax) = summary(&mut first);
    let (r50, _, rmax) = summary(&mut rows);
    let (l50, _, lmax) = summary(&mut list);
    println!(
        "| first frame after launch ({n} adapters) | {f50:.1} ms | max {fmax:.1} ms (9 launches) |"
    );
    println!("| first row on screen | {r50:.1} ms | max {rmax:.1} ms |");
    println!("| full list on screen (headers of {n} read) | {l50:.1} ms | max {lmax:.1} ms |");
}

/// Per key press: update + one frame through the crossterm backend into memory.
fn redraw(cache: &Path, large: &Path) {
    let mut adapters = discovery::scan(&ScanRequest {
        cache: Some(cache.to_path_buf()),
        ..Default::default()
    });
    adapters.extend(discovery::scan(&ScanRequest {
        cache: Some(large.to_path_buf()),
        ..Default::default()
    }));
    let mut app = App::new(Options::default());
    app.update(Action::ScanDone {
        adapters,
        note: None,
    });
    let backend = CrosstermBackend::new(Sink(0));
    let mut term = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, COLS, ROWS)),
        },
    )
    .unwrap();
    event::draw(&mut term, &mut app).unwrap();
    let mut press = |app: &mut App, a: Action, out: &mut Vec<f64>| {
        let t = Instant::now();
        app.update(a);
        event::draw(&mut term, app).unwrap();
        out.push(ms(t.elapsed()));
    };
    let mut list = vec![];
    for _ in 0..3 {
        for c in [Command::Down; 60].into_iter().chain([Command::Up; 60]) {
            press(&mut app, Action::Command(c), &mut list);
        }
        for c in [
            Command::PageDown,
            Command::PageDown,
            Command::Bottom,
            Command::Top,
            Command::SortNext,
            Command::SortReverse,
            Command::Mark,
        ] {
            press(&mut app, Action::Command(c), &mut list);
        }
        press(&mut app, Action::Command(Command::Filter), &mut list);
        for ch in "expert".chars() {
            press(&mut app, Action::Input(ch), &mut list);
        }
        press(&mut app, Action::Command(Command::FilterClear), &mut list);
    }
    // The large adapter, statistics known: every view.
    let idx = app
        .adapters
        .iter()
        .position(|a| a.id.ends_with("large"))
        .unwrap();
    let stats =
        stats::compute(&app.adapters[idx], &Filter::default(), &Control::default()).unwrap();
    let pos = app
        .list
        .visible
        .iter()
        .position(|r| r.adapter() == Some(idx))
        .unwrap();
    app.list.selected = pos;
    app.update(Action::Command(Command::Open));
    app.update(Action::Command(Command::View(3)));
    let job = match app.take_effects().pop() {
        Some(Effect::Stats { job, .. }) => job,
        e => panic!("{e:?}"),
    };
    app.update(Action::Done {
        job,
        result: Ok(stats.into()),
        secs: 0.0,
    });
    let mut views = vec![];
    for _ in 0..5 {
        for tab in 0..4 {
            press(&mut app, Action::Command(Command::View(tab)), &mut views);
            for c in [
                Command::Down,
                Command::Down,
                Command::Right,
                Command::PageDown,
                Command::NextMetric,
                Command::Up,
            ] {
                press(&mut app, Action::Command(c), &mut views);
            }
        }
    }
    let (a50, a99, amax) = summary(&mut list);
    let (b50, b99, bmax) = summary(&mut views);
    println!(
        "| key press → frame, adapter list ({} rows) | {a50:.2} ms | p99 {a99:.2} ms, max {amax:.2} ms ({} presses) |",
        app.adapters.len(),
        list.len()
    );
    println!(
        "| key press → frame, views of the large adapter (1632 deltas) | {b50:.2} ms | p99 {b99:.2} ms, max {bmax:.2} ms ({} presses) |",
        views.len()
    );
}

/// Keys while the large adapter's statistics compute: 1 (Tree) and 4 (Stats) in turn, each
/// timed from the write to the arrival of the frame that shows the new view.
fn latency_during_stats(bin: &Path, cache: &Path, home: &Path) {
    let mut p = spawn(bin, cache, home);
    p.wait_for("1 adapter", WAIT).expect("the list");
    let mark = p.mark();
    p.send(b"\r");
    p.wait_for_after(mark, "2 Layer map", WAIT)
        .expect("adapter view");
    std::thread::sleep(Duration::from_millis(100));
    let mark = p.mark();
    let t_start = p.send(b"4");
    p.wait_for_after(mark, "computing statistics", WAIT)
        .expect("statistics started");
    let mut during = vec![];
    let mut after = vec![];
    let mut t_done: Option<Instant> = None;
    let mut i = 0;
    while after.len() < 20 {
        std::thread::sleep(Duration::from_millis(60));
        // What only the new view shows: the tree's first row, or the Stats tab's gauge (or its
        // table once the computation has finished).
        let (key, needles): (&[u8], &[&str]) = if i % 2 == 0 {
            (b"1", &["▾ layer 0"])
        } else {
            (b"4", &["Esc cancels", "LAYER"])
        };
        i += 1;
        let mark = p.mark();
        let sent = p.send(key);
        let got = p
            .wait_for_any_after(mark, needles, WAIT)
            .expect("an answer");
        if t_done.is_none() {
            t_done = p.wait_for("statistics ready", Duration::ZERO);
        }
        // Counted as "during" only when the computation was still running at the answer.
        match t_done {
            Some(d) if d <= got => after.push(ms(got - sent)),
            _ => during.push(ms(got - sent)),
        }
        if i > 400 {
            break;
        }
    }
    let secs = t_done.map_or(f64::NAN, |d| (d - t_start).as_secs_f64());
    p.send(b"q");
    std::thread::sleep(Duration::from_millis(50));
    p.send(b"q");
    let _ = p.wait(WAIT);
    let n = during.len();
    let (d50, d99, dmax) = summary(&mut during);
    let (i50, _, imax) = summary(&mut after);
    println!(
        "| key → frame while statistics compute ({secs:.1} s for 1632 deltas) | {d50:.1} ms | p99 {d99:.1} ms, max {dmax:.1} ms ({n} keys) |"
    );
    println!("| key → frame, idle (same session, after) | {i50:.1} ms | max {imax:.1} ms |");
}

/// Keys while the list's health column fills (the explorer checks every adapter in the
/// background after the scan, one at a time): `j` and `k` in turn, each timed from the write to
/// the frame whose detail pane names the newly selected adapter. `ids`: the list's order.
fn latency_during_health(bin: &Path, cache: &Path, home: &Path, n: usize, ids: &[String]) {
    let mut p = spawn(bin, cache, home);
    let t_start = p
        .wait_for(&format!("{n} adapters"), WAIT)
        .expect("the list");
    // The detail pane's title: the selected adapter's id between spaces, on the border.
    let title = |id: &str| format!(" {id} ─");
    let (mut during, mut after) = (vec![], vec![]);
    let mut t_done: Option<Instant> = None;
    let mut i = 0;
    while after.len() < 20 && i < 600 {
        std::thread::sleep(Duration::from_millis(30));
        let (key, to) = if i % 2 == 0 {
            (b"j", &ids[1])
        } else {
            (b"k", &ids[0])
        };
        i += 1;
        let mark = p.mark();
        let sent = p.send(key);
        let got = p.wait_for_after(mark, &title(to), WAIT).expect("an answer");
        if t_done.is_none() && !p.screen().contains(" · health ") {
            t_done = Some(got);
        }
        match t_done {
            Some(_) => after.push(ms(got - sent)),
            None => during.push(ms(got - sent)),
        }
    }
    // Still filling after the last key: say so rather than print a NaN duration.
    let filled = match t_done {
        Some(d) => format!("filled in {:.1} s", (d - t_start).as_secs_f64()),
        None => "still filling after the last key".into(),
    };
    p.send(b"q");
    let _ = p.wait(WAIT);
    let k = during.len();
    let (d50, d99, dmax) = summary(&mut during);
    println!(
        "| key → frame while the health column fills ({n} adapters, {filled}) | {d50:.1} ms | p99 {d99:.1} ms, max {dmax:.1} ms ({k} keys) |"
    );
    if !after.is_empty() {
        let (i50, _, imax) = summary(&mut after);
        println!("| key → frame, idle (same session, after) | {i50:.1} ms | max {imax:.1} ms |");
    }
}

fn main() {
    if !pty::available() {
        eprintln!("tui bench skipped: util-linux `script` is not installed");
        return;
    }
    // `cargo test --benches` runs this too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // LORASCOPE_BIN: a copy of the binary, for a target folder that other builds share.
    let bin = std::env::var_os("LORASCOPE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_lorascope")),
        PathBuf::from,
    );
    // TUI_BENCH_DIR keeps the caches (for a look with `lorascope tui --cache DIR/cache`).
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("TUI_BENCH_DIR").map_or(tmp.path().to_path_buf(), PathBuf::from);
    let (cache, large, home) = (root.join("cache"), root.join("large"), root.join("home"));
    std::fs::create_dir_all(&home).unwrap();
    let (n, bytes, ids) = write_survey(&cache);
    let large_bytes = write_large(&large);
    println!(
        "{n} adapters, {:.1} GB of safetensors (sparse); large adapter {:.0} MB; {} cores; {COLS}×{ROWS}",
        bytes as f64 / 1e9,
        large_bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| measure | median | spread |\n|---|---|---|");
    first_frame(&bin, &cache, &home, n, &ids[0]);
    redraw(&cache, &large);
    latency_during_stats(&bin, &large, &home);
    let mut order = ids;
    order.sort();
    latency_during_health(&bin, &cache, &home, n, &order);
}
