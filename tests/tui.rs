//! The explorer without a terminal: `App::update` driven by actions, and every view rendered into
//! ratatui's `TestBackend` and compared with committed insta snapshots.

use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::synth::{self, Dims, Pattern, Spec};
use lorascope::tui::app::{Action, App, CompareOutput, Effect, Options};
use lorascope::tui::event;
use lorascope::tui::jobs::{Job, JobKey};
use lorascope::tui::keymap::{self, Command};
use lorascope::tui::model::ListColumn;
use lorascope::tui::screen::{Screen, Tab};
use lorascope::view::grid::{present_color, CellKind, Grid, Measure};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[path = "support/image.rs"]
mod image;
use image::Image;

/// gpt-oss's structure (24 layers, 32 experts) at toy widths: real-looking maps, tiny files.
const DIMS: Dims = Dims {
    layers: 24,
    hidden: 24,
    q_out: 32,
    kv_out: 16,
    experts: 32,
    inter: 12,
};

fn spec(pattern: Pattern, r: usize, er: usize, dtype: Dtype, seed: u64) -> Spec {
    let mut s = Spec::new(DIMS, pattern);
    s.attn_rank = r;
    s.expert_rank = er;
    s.alpha = 2.0 * r as f64;
    s.dtype = dtype;
    s.seed = seed;
    s
}

/// Loads the adapter in `dir` under a stable id, with the temp folder's name taken out of what
/// is shown (paths, messages), so that snapshots do not depend on it.
fn load(root: &Path, name: &str) -> Adapter {
    let mut src = discovery::discover_path(&root.join(name)).remove(0);
    let id = format!("fixtures/{name}");
    src.id = id.clone();
    let mut a = Adapter::load(&src, LayoutOptions::default());
    let tmp = root.display().to_string();
    a.path = PathBuf::from("/cache").join(name);
    a.error = a.error.map(|e| e.replace(&tmp, "/cache"));
    a.notes = a.notes.iter().map(|n| n.replace(&tmp, "/cache")).collect();
    a
}

/// Six adapters: attention only, router, per-expert PEFT, Tinker 3D, empty, and a corrupt file.
fn fixtures() -> (tempfile::TempDir, Vec<Adapter>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut qv = spec(Pattern::Attention, 8, 0, Dtype::F32, 2);
    qv.targets = vec!["q_proj", "v_proj"];
    let write = |name: &str, s: &Spec| {
        synth::write_adapter(&root.join(name), s).unwrap();
    };
    write("attn-r8", &spec(Pattern::Attention, 8, 0, Dtype::F32, 1));
    write("qv-r8", &qv);
    write(
        "moe-peft",
        &spec(
            Pattern::PeftExperts {
                layers: vec![0, 7, 15, 23],
            },
            8,
            4,
            Dtype::BF16,
            4,
        ),
    );
    write("tinker-3d", &spec(Pattern::Tinker3d, 4, 4, Dtype::BF16, 5));
    write(
        "router",
        &spec(Pattern::AttentionRouter, 4, 0, Dtype::F32, 3),
    );
    write("empty", &spec(Pattern::Empty, 4, 0, Dtype::F32, 6));
    write("corrupt", &spec(Pattern::Attention, 4, 0, Dtype::F32, 9));
    let f = root.join("corrupt").join("adapter_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let names = [
        "attn-r8",
        "qv-r8",
        "moe-peft",
        "tinker-3d",
        "router",
        "empty",
        "corrupt",
    ];
    let adapters = names.iter().map(|n| load(root, n)).collect();
    (dir, adapters)
}

fn new_app(color: bool) -> (tempfile::TempDir, App) {
    let (dir, adapters) = fixtures();
    let mut app = App::new(Options {
        color,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    });
    app.update(Action::ScanDone {
        adapters,
        note: None,
    });
    (dir, app)
}

fn cmd(app: &mut App, c: Command) {
    app.update(Action::Command(c));
}

fn cmds(app: &mut App, cs: &[Command]) {
    for &c in cs {
        cmd(app, c);
    }
}

/// Selects the list row of `id` (by moving, as a user would).
fn select(app: &mut App, id: &str) {
    cmd(app, Command::Top);
    for _ in 0..app.list.visible.len() {
        if app.adapters[app.selected_adapter().unwrap()].id == id {
            return;
        }
        cmd(app, Command::Down);
    }
    panic!("{id} not in the list");
}

/// Runs queued work synchronously, as the event loop would in the background.
fn run_effects(app: &mut App) {
    run_effects_with(app, &|_| {});
}

/// `run_effects`, with a run's checkpoints where `fix` says they are on disk.
fn run_effects_with(app: &mut App, fix: &dyn Fn(&mut lorascope::run::Loaded)) {
    let effects = app.take_effects();
    // A job cancelled in the same batch runs with its flag already set (the event loop sets it
    // while the job runs).
    let cancelled: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Cancel(j) => Some(*j),
            _ => None,
        })
        .collect();
    for e in effects {
        match e {
            Effect::Export {
                job,
                adapter,
                out,
                opts,
            } => {
                let flag = std::sync::atomic::AtomicBool::new(cancelled.contains(&job));
                let ctl = Control {
                    cancel: Some(&flag),
                    ..Control::default()
                };
                let r = lorascope::tui::export_panel::run(&adapter, &out, &opts, &ctl);
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Stats { job, adapter } => {
                let r = stats::compute(&adapter, &Filter::default(), &Control::default())
                    .map_err(|e| e.to_string());
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Compare { job, a, b, .. } => {
                let st = |x: &Adapter| {
                    Arc::new(stats::compute(x, &Filter::default(), &Control::default()).unwrap())
                };
                let comparison =
                    lorascope::compute::compare::compare(&a, &b, &Control::default()).unwrap();
                app.update(Action::Done {
                    job,
                    result: Ok(CompareOutput {
                        comparison,
                        stats_a: st(&a),
                        stats_b: st(&b),
                    }
                    .into()),
                    secs: 0.02,
                });
            }
            Effect::Health { job, adapter } => {
                let r = lorascope::health::check(&adapter, &Control::default())
                    .map_err(|e| e.to_string());
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Base {
                job,
                adapter,
                id,
                dir,
            } => {
                let r =
                    event::BaseSessions::default().report(&adapter, &id, &dir, &Control::default());
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Intruders {
                job,
                adapter,
                delta,
                id,
                dir,
            } => {
                let r = event::BaseSessions::default().intruders(
                    &adapter,
                    delta,
                    &id,
                    &dir,
                    &Control::default(),
                );
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Merged {
                job,
                adapter,
                id,
                dir,
            } => {
                let r =
                    event::BaseSessions::default().merged(&adapter, &id, &dir, &Control::default());
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Timeline { job, mut loaded } => {
                fix(&mut loaded);
                // No cache: nothing is written outside the test's folders.
                let flag = std::sync::atomic::AtomicBool::new(cancelled.contains(&job));
                let r = event::timeline_job(*loaded, None, &flag, &mut |done, total, out| {
                    app.update(Action::Progress { job, done, total });
                    app.update(Action::Partial {
                        job,
                        output: out.into(),
                    });
                });
                app.update(Action::Done {
                    job,
                    result: r.map(Into::into),
                    secs: 0.01,
                });
            }
            Effect::Cancel(_)
            | Effect::ExportPlot
            | Effect::Fetch { .. }
            | Effect::Discover { .. } => {}
        }
    }
}

fn draw(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    event::draw(&mut t, app).unwrap();
    t
}

/// The size every snapshot is taken at.
const W: u16 = 120;
const H: u16 = 36;

// ---------------------------------------------------------------------------------------------
// App::update, without a terminal

#[test]
fn list_moves_sorts_and_quits_with_q() {
    let (_d, mut app) = new_app(true);
    assert_eq!(app.list.visible.len(), 7);
    // Sorted by id.
    assert_eq!(
        app.adapters[app.selected_adapter().unwrap()].id,
        "fixtures/attn-r8"
    );
    cmd(&mut app, Command::Bottom);
    assert_eq!(app.list.selected, 6);
    cmd(&mut app, Command::Down);
    assert_eq!(app.list.selected, 6, "stays on the last row");
    cmd(&mut app, Command::Top);
    cmd(&mut app, Command::Up);
    assert_eq!(app.list.selected, 0);
    // Sort by the next column (pattern), then reverse: the selected adapter stays selected.
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::SortNext);
    assert_eq!(app.list.sort, lorascope::tui::model::ListColumn::Pattern);
    assert_eq!(
        app.adapters[app.selected_adapter().unwrap()].id,
        "fixtures/moe-peft"
    );
    let first = app.list.visible[0];
    cmd(&mut app, Command::SortReverse);
    assert_eq!(*app.list.visible.last().unwrap(), first);
    assert!(!app.quit);
    cmd(&mut app, Command::Back);
    assert!(app.quit, "q quits from the list");
}

/// The ids of the list's rows as shown, and the selected one.
fn shown(app: &App) -> (Vec<String>, Option<String>) {
    let ids = app
        .list
        .visible
        .iter()
        .map(|&r| app.list.row(r).id.clone())
        .collect();
    (
        ids,
        app.selected_adapter().map(|i| app.adapters[i].id.clone()),
    )
}

fn scanning_app() -> App {
    App::new(Options {
        color: false,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    })
}

#[test]
fn scan_rows_join_the_list_keeping_sort_filter_and_selection() {
    let (_d, adapters) = fixtures();
    let mut app = scanning_app();
    app.update(Action::ScanProgress {
        what: "reading adapter headers".into(),
        done: 0,
        total: adapters.len(),
    });
    // Rows arrive out of id order: router first, then the rest one by one.
    let mut order = adapters.clone();
    order.rotate_left(4);
    let mut rows = order.into_iter();
    app.update(Action::ScanRows {
        adapters: vec![rows.next().unwrap()],
    });
    // The first row is on screen while the scan goes on.
    let screen = format!("{:?}", draw(&mut app, W, H).backend());
    assert!(screen.contains("fixtures/router"), "{screen}");
    assert!(screen.contains("scanning… 1 of 7 read"), "{screen}");
    app.update(Action::ScanRows {
        adapters: vec![rows.next().unwrap()],
    });
    select(&mut app, "fixtures/router");
    cmd(&mut app, Command::Filter);
    for ch in "router".chars() {
        app.update(Action::Input(ch));
    }
    let selected = Some("fixtures/router".to_string());
    for a in rows.by_ref().take(3) {
        app.update(Action::ScanRows { adapters: vec![a] });
        // New rows sort in above the selection; it stays on the same adapter, the filter stays.
        assert_eq!(shown(&app).1, selected);
        assert_eq!(app.list.filter, "router");
        assert!(app.list.editing);
    }
    app.update(Action::ScanDone {
        adapters: rows.collect(),
        note: None,
    });
    assert_eq!(shown(&app).1, selected);
    // The same list as a scan that sent every adapter at its end, with the same filter.
    let mut whole = scanning_app();
    whole.update(Action::ScanDone {
        adapters,
        note: None,
    });
    cmd(&mut whole, Command::Filter);
    for ch in "router".chars() {
        whole.update(Action::Input(ch));
    }
    assert!(
        shown(&app).0.len() < 7,
        "the filter hides rows: {:?}",
        shown(&app)
    );
    assert_eq!(shown(&app).0, shown(&whole).0);
    assert_eq!(app.list.widths, whole.list.widths);
}

#[test]
fn the_explorers_scan_sends_rows_before_it_ends_and_ends_with_the_scans_list() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    for (i, p) in [
        Pattern::Attention,
        Pattern::Tinker3d,
        Pattern::AttentionRouter,
    ]
    .into_iter()
    .cycle()
    .take(9)
    .enumerate()
    {
        let item = synth::Item::Adapter {
            sub: String::new(),
            spec: spec(p, 4, 2, Dtype::BF16, i as u64),
        };
        synth::write_hub_repo(&cache, &format!("org/a{i}"), &[item]).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let actions = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        event::spawn_scan(
            &tx,
            event::ScanJob {
                cache: Some(cache.clone()),
                explicit_cache: true,
                paths: vec![],
            },
        );
        let mut got = vec![];
        while let Some(a) = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
            .await
            .expect("the scan ends")
        {
            let done = matches!(a, Action::ScanDone { .. });
            got.push(a);
            if done {
                break;
            }
        }
        got
    });
    let rows: usize = actions
        .iter()
        .map(|a| match a {
            Action::ScanRows { adapters } => adapters.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(rows, 9, "every adapter arrives as a row before the end");
    let mut app = scanning_app();
    let mut seen_while_scanning = 0;
    for a in actions {
        app.update(a);
        if app.scan != lorascope::tui::app::ScanState::Done {
            seen_while_scanning = seen_while_scanning.max(app.list.visible.len());
        }
    }
    assert_eq!(seen_while_scanning, 9, "rows listed before the scan ended");
    // The library's scan, sent whole: the same adapters in the same order, the same list.
    let mut whole = scanning_app();
    whole.update(Action::ScanDone {
        adapters: discovery::scan(&discovery::ScanRequest {
            cache: Some(cache),
            ..Default::default()
        }),
        note: None,
    });
    let ids = |app: &App| -> Vec<String> { app.adapters.iter().map(|a| a.id.clone()).collect() };
    assert_eq!(ids(&app), ids(&whole));
    assert_eq!(shown(&app), shown(&whole));
    assert_eq!(
        format!("{:?}", draw(&mut app, W, H).backend()),
        format!("{:?}", draw(&mut whole, W, H).backend())
    );
}

#[test]
fn filter_as_you_type_enter_keeps_esc_clears() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Filter);
    assert!(app.modes().contains(&keymap::Mode::Filter));
    for c in "MOE".chars() {
        app.update(Action::Input(c));
    }
    assert_eq!(app.list.visible.len(), 1, "case-insensitive, as you type");
    cmd(&mut app, Command::FilterDelete);
    cmd(&mut app, Command::FilterDelete);
    assert!(app.list.visible.len() > 1);
    app.update(Action::Input('o'));
    app.update(Action::Input('e'));
    cmd(&mut app, Command::FilterKeep);
    assert!(!app.list.editing);
    assert_eq!(app.list.filter, "Moe");
    assert_eq!(app.list.visible.len(), 1, "Enter keeps the filter");
    // Typing outside the filter does nothing.
    app.update(Action::Input('x'));
    assert_eq!(app.list.filter, "Moe");
    cmd(&mut app, Command::Escape);
    assert_eq!(app.list.filter, "");
    assert_eq!(app.list.visible.len(), 7, "Esc clears it");
    // Esc while typing clears too; words must all match.
    cmd(&mut app, Command::Filter);
    for c in "fixtures error".chars() {
        app.update(Action::Input(c));
    }
    assert_eq!(app.list.visible.len(), 1);
    cmd(&mut app, Command::FilterClear);
    assert!(!app.list.editing && app.list.filter.is_empty());
}

/// Esc on the list stops a running fetch (its task is aborted by the event loop) before it
/// clears anything; a result that still arrives for it is dropped.
#[test]
fn esc_on_the_list_cancels_a_running_fetch() {
    let (dir, mut app) = new_app(true);
    app.fetch_cache = Some(dir.path().join("hub"));
    cmd(&mut app, Command::Fetch);
    for c in "org/slow".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    let job = match app.take_effects().as_slice() {
        [Effect::Fetch { job, .. }] => *job,
        other => panic!("expected one fetch, got {other:?}"),
    };
    cmd(&mut app, Command::Filter);
    app.update(Action::Input('m'));
    cmd(&mut app, Command::FilterKeep);
    cmd(&mut app, Command::Escape);
    assert!(
        matches!(app.take_effects().as_slice(), [Effect::Cancel(j)] if *j == job),
        "the loop is asked to stop the fetch"
    );
    assert!(app.fetch().is_none());
    assert_eq!(app.list.filter, "m", "the first Esc only cancels");
    assert!(
        app.status
            .as_deref()
            .unwrap()
            .contains("fetch of org/slow cancelled"),
        "{:?}",
        app.status
    );
    let n = app.adapters.len();
    let late = app.adapters[0].as_ref().clone();
    app.update(Action::Done {
        job,
        result: Ok(vec![late].into()),
        secs: 0.0,
    });
    assert_eq!(
        app.adapters.len(),
        n,
        "a cancelled fetch's result is dropped"
    );
    cmd(&mut app, Command::Escape);
    assert_eq!(app.list.filter, "", "then Esc clears the filter as before");
}

#[test]
fn fetch_popup_types_an_id_esc_closes_enter_starts_a_fetch() {
    let (dir, mut app) = new_app(true);
    app.fetch_cache = Some(dir.path().join("hub"));
    let list = [keymap::Mode::List, keymap::Mode::Move, keymap::Mode::Global];
    let f = ratatui::crossterm::event::KeyEvent::new(
        ratatui::crossterm::event::KeyCode::Char('F'),
        ratatui::crossterm::event::KeyModifiers::SHIFT,
    );
    assert_eq!(keymap::lookup(&list, &f), Some(Command::Fetch));
    cmd(&mut app, Command::Fetch);
    assert_eq!(app.modes()[0], keymap::Mode::Fetch);
    // Every character is text, `q` and `?` included; the filter is untouched.
    for c in "org/q?x".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FilterDelete);
    assert_eq!(app.fetch_input.as_deref(), Some("org/q?"));
    assert!(app.list.filter.is_empty() && app.help.is_none() && !app.quit);
    // Esc closes the popup and forgets the text.
    cmd(&mut app, Command::FetchCancel);
    assert!(app.fetch_input.is_none());
    assert_eq!(app.modes()[0], keymap::Mode::List);
    assert!(app.take_effects().is_empty());
    // A bad id keeps the popup open with the reason in the status bar.
    cmd(&mut app, Command::Fetch);
    for c in "not-an-id".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    assert!(app.fetch_input.is_some());
    assert!(
        app.status.as_deref().unwrap().contains("not-an-id"),
        "{:?}",
        app.status
    );
    assert!(app.take_effects().is_empty());
    // Enter on a good id closes the popup and asks the loop to fetch into the cache.
    for _ in 0.."not-an-id".len() {
        cmd(&mut app, Command::FilterDelete);
    }
    for c in "org/new-adapter@v2".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    assert!(app.fetch_input.is_none());
    let effects = app.take_effects();
    let job = match effects.as_slice() {
        [Effect::Fetch { job, repo, cache }] => {
            assert_eq!(repo.repo, "org/new-adapter");
            assert_eq!(repo.revision, "v2");
            assert_eq!(cache, &dir.path().join("hub"));
            *job
        }
        other => panic!("expected one fetch, got {other:?}"),
    };
    let running = app.fetch().unwrap();
    assert_eq!(
        (running.id, running.repo.as_str()),
        (job, "org/new-adapter@v2")
    );
    // One fetch at a time.
    cmd(&mut app, Command::Fetch);
    app.update(Action::Input('a'));
    app.update(Action::Input('/'));
    app.update(Action::Input('b'));
    cmd(&mut app, Command::FetchStart);
    assert!(app.take_effects().is_empty());
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("still being fetched"));
    // Progress moves the status bar's gauge; stale jobs are ignored.
    app.update(Action::Progress {
        job,
        done: 1_500_000,
        total: 3_000_000,
    });
    app.update(Action::Progress {
        job: job + 100,
        done: 1,
        total: 1,
    });
    assert_eq!(
        app.fetch().map(|f| (f.done, f.total)),
        Some((1_500_000, 3_000_000))
    );
    app.status = None;
    let t = draw(&mut app, W, H);
    let bottom: String = (0..W)
        .map(|x| t.backend().buffer()[(x, H - 1)].symbol().to_string())
        .collect();
    assert!(
        bottom.contains("fetching org/new-adapter@v2 ████░░░░ 50%"),
        "{bottom}"
    );
    // The fetched repo's adapter joins the list, selected.
    let mut fetched = app.adapters[0].as_ref().clone();
    fetched.id = "org/new-adapter".into();
    cmd(&mut app, Command::Filter);
    app.update(Action::Input('m'));
    app.update(Action::Input('o'));
    app.update(Action::Input('e'));
    cmd(&mut app, Command::FilterKeep);
    let n = app.adapters.len();
    app.update(Action::Done {
        job,
        result: Ok(vec![fetched].into()),
        secs: 0.0,
    });
    assert!(app.fetch().is_none());
    assert_eq!(app.adapters.len(), n + 1);
    assert!(
        app.list.filter.is_empty(),
        "a filter hiding the new row is cleared"
    );
    assert_eq!(
        app.adapters[app.selected_adapter().unwrap()].id,
        "org/new-adapter"
    );
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("fetched org/new-adapter@v2: 1 adapter"));
    // Fetching it again replaces the row instead of adding one.
    cmd(&mut app, Command::Fetch);
    for c in "org/new-adapter".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    let job = app.fetch().unwrap().id;
    let _ = app.take_effects();
    let mut again = app.adapters[1].as_ref().clone();
    again.id = "org/new-adapter".into();
    app.update(Action::Done {
        job,
        result: Ok(vec![again].into()),
        secs: 0.0,
    });
    assert_eq!(app.adapters.len(), n + 1);
    // A failure shows its message and nothing else changes.
    cmd(&mut app, Command::Fetch);
    for c in "org/gone".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    let job = app.fetch().unwrap().id;
    app.update(Action::Done {
        job,
        result: Err("fetching org/gone: HF_HUB_OFFLINE is set".into()),
        secs: 0.0,
    });
    assert!(app.fetch().is_none());
    assert_eq!(app.adapters.len(), n + 1);
    assert_eq!(
        app.status.as_deref(),
        Some("fetching org/gone: HF_HUB_OFFLINE is set")
    );
}

#[test]
fn fetch_without_a_hub_cache_says_so() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Fetch);
    for c in "org/x".chars() {
        app.update(Action::Input(c));
    }
    cmd(&mut app, Command::FetchStart);
    assert!(app.take_effects().is_empty() && app.fetch().is_none());
    assert!(app.status.as_deref().unwrap().contains("no hub cache"));
}

#[test]
fn marks_keep_two_and_compare_needs_both() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Compare);
    assert!(matches!(app.screen, Screen::List));
    assert!(app.status.as_deref().unwrap().contains("mark two"));
    for id in ["fixtures/attn-r8", "fixtures/qv-r8", "fixtures/moe-peft"] {
        select(&mut app, id);
        cmd(&mut app, Command::Mark);
    }
    let ids: Vec<&str> = app
        .list
        .marked
        .iter()
        .map(|&i| app.adapters[i].id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["fixtures/qv-r8", "fixtures/moe-peft"],
        "the oldest mark goes"
    );
    cmd(&mut app, Command::Mark); // unmark moe-peft
    assert_eq!(app.list.marked.len(), 1);
    select(&mut app, "fixtures/attn-r8");
    cmd(&mut app, Command::Mark);
    cmd(&mut app, Command::Compare);
    assert!(matches!(app.screen, Screen::Compare(_)));
    let effects = app.take_effects();
    assert!(matches!(effects.as_slice(), [Effect::Compare { .. }]));
    // Leaving while it runs cancels it; a late result is dropped.
    cmd(&mut app, Command::Back);
    assert!(matches!(app.screen, Screen::List));
    assert!(matches!(app.take_effects().as_slice(), [Effect::Cancel(_)]));
    assert!(app.jobs.is_empty());
}

fn health_cell(app: &App, id: &str) -> String {
    let i = app.adapters.iter().position(|a| a.id == id).unwrap();
    app.list.rows[i].cell(ListColumn::Health)
}

#[test]
fn health_column_fills_in_the_background_cheapest_first_one_at_a_time() {
    let (_d, mut app) = new_app(true);
    assert!(
        app.take_effects().is_empty(),
        "off until the explorer turns it on"
    );
    assert_eq!(health_cell(&app, "fixtures/router"), "…");
    assert_eq!(health_cell(&app, "fixtures/empty"), "…");
    app.enable_health();
    let n = app.adapters.len();
    let title = |app: &mut App| {
        screen_text(&draw(app, 120, 20))
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    assert!(title(&mut app).contains(&format!("{n} adapters · health 0 of {n}")));
    let mut order = vec![];
    loop {
        let effects = app.take_effects();
        let [Effect::Health { job, adapter }] = effects.as_slice() else {
            assert!(effects.is_empty(), "one check at a time: {effects:?}");
            break;
        };
        order.push(adapter.clone());
        // Keys are answered while the check runs: the list moves, nothing waits.
        let before = app.list.selected;
        cmd(&mut app, Command::Down);
        assert_ne!(app.list.selected, before);
        cmd(&mut app, Command::Up);
        let r = lorascope::health::check(adapter, &Control::default()).map_err(|e| e.to_string());
        app.update(Action::Done {
            job: *job,
            result: r.map(Into::into),
            secs: 0.01,
        });
    }
    // The title said how far the checks were, and says nothing more once they are done.
    assert_eq!(app.health_progress(), None);
    assert!(!title(&mut app).contains("health"), "{}", title(&mut app));
    let sizes: Vec<u64> = order.iter().map(|a| a.bytes()).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] <= w[1]),
        "cheapest first: {sizes:?}"
    );
    // Every adapter was checked, the empty file too: it changes nothing, an error.
    assert_eq!(order.len(), app.adapters.len());
    assert_eq!(health_cell(&app, "fixtures/attn-r8"), "✓");
    // vLLM refuses modules_to_save and SGLang ignores the saved router: an error.
    assert_eq!(health_cell(&app, "fixtures/router"), "✗");
    assert_eq!(health_cell(&app, "fixtures/corrupt"), "✗");
    assert_eq!(health_cell(&app, "fixtures/empty"), "✗");
    let i = app
        .adapters
        .iter()
        .position(|a| a.id == "fixtures/router")
        .unwrap();
    assert!(
        app.list.rows[i]
            .detail
            .iter()
            .any(|d| d.starts_with("health ✗ serve-")),
        "{:?}",
        app.list.rows[i].detail
    );
}

#[test]
fn a_failed_health_check_shows_a_question_mark_and_the_next_one_starts() {
    let (_d, mut app) = new_app(true);
    app.enable_health();
    let effects = app.take_effects();
    let [Effect::Health { job, adapter }] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    let id = adapter.id.clone();
    app.update(Action::Done {
        job: *job,
        result: Err("file changed".into()),
        secs: 0.0,
    });
    assert_eq!(health_cell(&app, &id), "?");
    assert!(
        matches!(app.take_effects().as_slice(), [Effect::Health { adapter, .. }] if adapter.id != id)
    );
}

#[test]
fn open_tabs_start_statistics_once_and_cache_them() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        panic!("Enter opens the adapter view");
    };
    assert_eq!(v.tab, Tab::Tree);
    assert!(
        app.take_effects().is_empty(),
        "the tree needs no statistics"
    );
    cmd(&mut app, Command::NextView);
    let effects = app.take_effects();
    let [Effect::Stats { job, .. }] = effects.as_slice() else {
        panic!("the layer map starts statistics: {effects:?}");
    };
    let job = *job;
    app.update(Action::Progress {
        job,
        done: 5,
        total: 352,
    });
    assert!(matches!(
        app.jobs.values().next(),
        Some(Job::Running { done: 5, .. })
    ));
    // Number keys switch views; the running job is not started twice.
    cmd(&mut app, Command::View(3));
    assert!(app.take_effects().is_empty());
    // A result of an unknown job is dropped.
    app.update(Action::Done {
        job: job + 100,
        result: Err("stale".into()),
        secs: 0.0,
    });
    assert!(matches!(
        app.jobs.values().next(),
        Some(Job::Running { .. })
    ));
    let a = app.current_adapter().unwrap().clone();
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    app.update(Action::Done {
        job,
        result: Ok(st.into()),
        secs: 0.5,
    });
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.stats_rows.len(), 352);
    assert!(
        v.layers.range(&[0]).is_some(),
        "the layer map has values now"
    );
    // Back, open again: the statistics are kept for the run.
    cmd(&mut app, Command::Back);
    cmd(&mut app, Command::Open);
    cmd(&mut app, Command::View(1));
    assert!(app.take_effects().is_empty());
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert!(v.layers.range(&[0]).is_some());
}

#[test]
fn esc_cancels_statistics_then_goes_back() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/tinker-3d");
    cmd(&mut app, Command::Open);
    cmd(&mut app, Command::View(3));
    let job = match app.take_effects().as_slice() {
        [Effect::Stats { job, .. }] => *job,
        e => panic!("{e:?}"),
    };
    cmd(&mut app, Command::Escape);
    assert!(matches!(app.take_effects().as_slice(), [Effect::Cancel(j)] if *j == job));
    assert!(
        matches!(app.screen, Screen::Adapter(_)),
        "the first Esc only cancels"
    );
    assert!(app.jobs.is_empty());
    // The cancelled job's late result is dropped.
    app.update(Action::Done {
        job,
        result: Err("cancelled".into()),
        secs: 0.0,
    });
    assert!(app.jobs.is_empty());
    cmd(&mut app, Command::Escape);
    assert!(matches!(app.screen, Screen::List));
    // q from a view goes back, q from the list quits, Ctrl-c quits from anywhere.
    cmd(&mut app, Command::Open);
    cmd(&mut app, Command::Back);
    assert!(matches!(app.screen, Screen::List) && !app.quit);
    cmd(&mut app, Command::Open);
    cmd(&mut app, Command::Quit);
    assert!(app.quit);
}

#[test]
fn tree_expands_collapses_and_walks_to_parents() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    let before = v.visible.len();
    assert_eq!(
        before,
        24 + 6,
        "24 layers, the first one open with its 6 modules"
    );
    // Down to the first module, expand it (its two tensors show), go back up with h.
    cmds(&mut app, &[Command::Down, Command::Expand]);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.visible.len(), before + 2);
    cmds(&mut app, &[Command::Down, Command::Collapse]);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tree_sel, 1, "h on a leaf goes to its parent");
    cmd(&mut app, Command::Collapse);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.visible.len(), before);
    cmd(&mut app, Command::ExpandAll);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.visible.len(), v.tree.len(), "e opens everything");
    cmd(&mut app, Command::ExpandAll);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.visible.len(), 24, "and closes everything");
}

#[test]
fn layer_map_enter_on_an_expert_cell_opens_the_expert_map_there() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    // Layer 7 is the 8th row; gate_up_proj the 5th column.
    cmds(&mut app, &[Command::Down; 7]);
    cmds(&mut app, &[Command::Right; 4]);
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Experts);
    assert_eq!(v.expert_targets[v.expert_target], "gate_up_proj");
    assert_eq!(v.experts.row_layers[v.expert_cursor.0], Some(7));
    // Enter on an expert shows its row in Stats.
    cmds(&mut app, &[Command::Right, Command::Right, Command::Open]);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Stats);
    let st = app.stats_of(v.idx).unwrap();
    let lorascope::tui::model::StatsRow::Delta(i) = v.stats_rows[v.stats_sel] else {
        panic!("a delta row")
    };
    let d = &st.deltas[i];
    assert_eq!(
        (d.layer, d.target.as_str(), d.expert),
        (Some(7), "gate_up_proj", Some(2))
    );
}

/// One MoE adapter whose gate_up experts of layer 7 never trained (a dead group) and whose
/// down_proj expert 2 of layer 15 is dead alone, listed by itself.
fn sick_app() -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        Pattern::PeftExperts {
            layers: vec![0, 7, 15, 23],
        },
        8,
        4,
        Dtype::F32,
        4,
    );
    s.damage = vec![
        synth::Damage::new(Some(7), Some("gate_up_proj"), None, synth::DamageKind::Dead),
        synth::Damage::new(
            Some(15),
            Some("down_proj"),
            Some(2),
            synth::DamageKind::Dead,
        ),
    ];
    synth::write_adapter(&dir.path().join("sick"), &s).unwrap();
    let mut app = App::new(Options {
        color: true,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    });
    app.update(Action::ScanDone {
        adapters: vec![load(dir.path(), "sick")],
        note: None,
    });
    (dir, app)
}

fn screen_text(t: &Terminal<TestBackend>) -> String {
    let b = t.backend().buffer();
    let w = b.area.width as usize;
    let cells: Vec<&str> = b.content.iter().map(|c| c.symbol()).collect();
    cells
        .chunks(w)
        .map(|l| l.concat())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The index in the Health view of the first finding with this code at this place.
fn finding_row(app: &App, code: &str, place: (Option<usize>, &str, Option<usize>)) -> usize {
    let h = app.jobs.health(0).expect("health checked");
    h.all()
        .position(|f| {
            f.code == code
                && (f.layer, f.target.as_deref(), f.expert) == (place.0, Some(place.1), place.2)
        })
        .unwrap_or_else(|| panic!("no {code} at {place:?}: {:#?}", h.findings))
}

#[test]
fn health_tab_checks_the_adapter_and_lists_its_findings() {
    let (_d, mut app) = sick_app();
    cmds(&mut app, &[Command::Open, Command::View(4)]);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Health);
    assert!(matches!(
        app.jobs.get(&JobKey::Health(0)),
        Some(Job::Running { .. })
    ));
    assert!(screen_text(&draw(&mut app, W, H)).contains("checking health"));
    run_effects(&mut app);
    let text = screen_text(&draw(&mut app, W, H));
    for want in [
        "verdict ✗ error",
        "layer 7 gate_up_proj: all ",
        "experts are zero",
        "layer 15 down_proj expert 2",
        "rank advice: ",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
    // The list's column took the same result: one check, not two.
    assert_eq!(health_cell(&app, "fixtures/sick"), "✗");
}

#[test]
fn health_tab_reuses_the_background_check() {
    let (_d, mut app) = sick_app();
    app.enable_health();
    run_effects(&mut app);
    assert!(app.jobs.health(0).is_some());
    cmds(&mut app, &[Command::Open, Command::View(4)]);
    assert!(app.take_effects().is_empty(), "no second check");
    assert!(screen_text(&draw(&mut app, W, H)).contains("experts are zero"));
}

/// Moves the tree's selection down to the first node `pick` accepts.
fn tree_down_to(app: &mut App, pick: impl Fn(&lorascope::tui::model::TreeNode) -> bool) {
    for _ in 0..200 {
        let Screen::Adapter(v) = &app.screen else {
            unreachable!()
        };
        if pick(&v.tree[v.visible[v.tree_sel]]) {
            return;
        }
        cmd(app, Command::Down);
    }
    panic!("no such tree node");
}

/// Issue 23: an adapter with one orphan lora_A opens in the explorer. The tree marks the module
/// and its tensor `unknown` with the reason, the statistics cover every other delta, and the
/// Health tab names the module.
#[test]
fn an_adapter_with_an_orphan_lora_a_opens_with_the_module_marked_and_the_rest_computed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(
        Pattern::PeftExperts { layers: vec![0, 7] },
        8,
        4,
        Dtype::F32,
        4,
    );
    s.damage = vec![synth::Damage::new(
        Some(7),
        Some("gate_up_proj"),
        None,
        synth::DamageKind::MissingB,
    )];
    synth::write_adapter(&dir.path().join("orphan"), &s).unwrap();
    let mut app = App::new(Options {
        color: true,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    });
    app.update(Action::ScanDone {
        adapters: vec![load(dir.path(), "orphan")],
        note: None,
    });
    let cell = app.list.rows[0].cell(ListColumn::Pattern);
    assert_eq!(cell, "attn+experts per-expert ?1");
    cmd(&mut app, Command::Open);
    tree_down_to(&mut app, |n| n.label == "layer 7");
    cmd(&mut app, Command::Expand);
    let why = "unknown: incomplete LoRA pair: lora_A without lora_B";
    tree_down_to(&mut app, |n| n.info.ends_with(why));
    cmd(&mut app, Command::Expand);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    let module = v.visible[v.tree_sel];
    assert_eq!(v.tree[module].info, format!("gate_up_proj · {why}"));
    let tensors: Vec<_> = v.tree.iter().filter(|n| n.parent == Some(module)).collect();
    assert_eq!(tensors.len(), 1, "the lone lora_A");
    assert!(tensors[0].label == "lora_A.weight" && tensors[0].info.ends_with("unknown"));
    insta::assert_snapshot!("tree_incomplete_pair", snap(&mut app).backend());
    // Statistics: every other delta, each found by its index.
    cmd(&mut app, Command::View(3));
    run_effects(&mut app);
    let a = app.adapters[0].clone();
    let st = app.stats_of(0).expect("statistics").clone();
    assert_eq!(st.deltas.len(), a.deltas.len());
    assert_eq!(
        a.deltas.len(),
        4 * 24 + 2 * 32 + 32,
        "attention, layer 0's experts, layer 7's down"
    );
    assert!(st.per_delta(&a).iter().all(Option::is_some));
    // Health: the module is named.
    cmd(&mut app, Command::View(4));
    run_effects(&mut app);
    finding_row(&app, "incomplete-pair", (Some(7), "gate_up_proj", None));
    let text = screen_text(&draw(&mut app, W, H));
    assert!(
        text.contains("module model.layers.7.mlp.experts.base_layer: lora_A"),
        "{text}"
    );
}

#[test]
fn enter_on_a_finding_jumps_to_its_cell() {
    let (_d, mut app) = sick_app();
    cmds(&mut app, &[Command::Open, Command::View(4)]);
    run_effects(&mut app);
    // The dead group of layer 7: its cell on the layer map.
    let row = finding_row(&app, "dead", (Some(7), "gate_up_proj", None));
    cmd(&mut app, Command::Top);
    cmds(&mut app, &vec![Command::Down; row]);
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Layers);
    assert_eq!(v.layers.row_layers[v.layer_cursor.0], Some(7));
    assert_eq!(v.layers.cols[v.layer_cursor.1].target, "gate_up_proj");
    // The single dead expert: its cell on the expert map of down_proj.
    cmd(&mut app, Command::View(4));
    run_effects(&mut app);
    let row = finding_row(&app, "dead", (Some(15), "down_proj", Some(2)));
    cmd(&mut app, Command::Top);
    cmds(&mut app, &vec![Command::Down; row]);
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Experts);
    assert_eq!(v.expert_targets[v.expert_target], "down_proj");
    assert_eq!(v.experts.row_layers[v.expert_cursor.0], Some(15));
    assert_eq!(v.experts.cols[v.expert_cursor.1].expert, Some(Some(2)));
}

#[test]
fn map_marks_come_from_the_health_findings() {
    use lorascope::view::grid::{self, Mark};
    let (_d, mut app) = sick_app();
    let a = app.adapters[0].clone();
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let h = lorascope::health::check(&a, &Control::default()).unwrap();
    let at = |g: &Grid, layer: usize, col: &dyn Fn(&lorascope::view::grid::Col) -> bool| {
        let r = g.row_layers.iter().position(|l| *l == Some(layer)).unwrap();
        let c = g.cols.iter().position(col).unwrap();
        g.cell(r, c).unwrap().mark
    };
    let mut layers = grid::layer_grid(&a, Some(&st), None);
    grid::mark_findings(&mut layers, &h.findings);
    let target = |t: &'static str| move |c: &lorascope::view::grid::Col| c.target == t;
    assert_eq!(at(&layers, 7, &target("gate_up_proj")), Some(Mark::Dead));
    assert_eq!(at(&layers, 15, &target("down_proj")), Some(Mark::Dead));
    assert_eq!(at(&layers, 0, &target("gate_up_proj")), None);
    assert_eq!(at(&layers, 7, &target("down_proj")), None);
    assert_eq!(layers.marks(), vec![Mark::Dead]);
    let mut experts = grid::expert_grid(
        &a,
        &lorascope::adapter::target::Target::parse("down_proj"),
        Some(&st),
        None,
    );
    grid::mark_findings(&mut experts, &h.findings);
    let expert = |e: usize| move |c: &lorascope::view::grid::Col| c.expert == Some(Some(e));
    assert_eq!(at(&experts, 15, &expert(2)), Some(Mark::Dead));
    assert_eq!(at(&experts, 15, &expert(1)), None);
    // No findings, no marks: they come from the check, not from the values.
    let mut plain = grid::layer_grid(&a, Some(&st), None);
    grid::mark_findings(&mut plain, &[]);
    assert!(plain.marks().is_empty());
    // The explorer's maps carry them once the check is known, with a legend entry.
    app.enable_health();
    run_effects(&mut app);
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(at(&v.layers, 7, &target("gate_up_proj")), Some(Mark::Dead));
    let text = screen_text(&draw(&mut app, W, H));
    assert!(text.contains("○ dead"), "{text}");
}

#[test]
fn stats_sort_by_any_column() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(3)]);
    run_effects(&mut app);
    // LAYER → TARGET → … → ‖ΔW‖_F (the 6th column), then descending.
    cmds(&mut app, &[Command::SortNext; 5]);
    cmd(&mut app, Command::SortReverse);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    let st = app.stats_of(v.idx).unwrap();
    let fro: Vec<f64> = v
        .stats_rows
        .iter()
        .map(|r| match r {
            lorascope::tui::model::StatsRow::Delta(i) => st.deltas[*i].fro_norm,
            lorascope::tui::model::StatsRow::Full(i) => st.full_tensors[*i].fro_norm,
            lorascope::tui::model::StatsRow::Merged(_) => panic!("not a merged model"),
        })
        .collect();
    assert!(fro.windows(2).all(|w| w[0] >= w[1]), "descending ‖ΔW‖_F");
}

/// The running statistics job the last command queued, and the adapter it is for.
fn stats_job(app: &mut App) -> (u64, Arc<Adapter>) {
    let effects = app.take_effects();
    let found = effects.iter().find_map(|e| match e {
        Effect::Stats { job, adapter } => Some((*job, adapter.clone())),
        _ => None,
    });
    found.unwrap_or_else(|| panic!("a statistics job: {effects:?}"))
}

fn targets(a: &Adapter) -> std::collections::BTreeSet<&str> {
    a.deltas.iter().map(|d| d.target.as_str()).collect()
}

fn title_line(app: &mut App) -> String {
    let t = draw(app, W, H);
    (0..W)
        .map(|x| t.backend().buffer()[(x, 0)].symbol().to_string())
        .collect()
}

#[test]
fn u_splits_gate_up_into_gate_and_up_with_statistics_per_layout() {
    let (_d, mut app) = new_app(false);
    // Nothing to split: `u` says so and the view stays as it was.
    select(&mut app, "fixtures/attn-r8");
    cmds(&mut app, &[Command::Open, Command::SplitGateUp]);
    assert!(app.status.as_deref().unwrap().contains("no fused gate_up"));
    assert!(app.take_effects().is_empty());
    cmd(&mut app, Command::Back);

    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(2)]);
    let (fused_job, fused) = stats_job(&mut app);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.expert_targets[v.expert_target], "gate_up_proj");
    // The experts of each column (the columns' targets differ between the layouts).
    let experts_of = |g: &lorascope::view::grid::Grid| -> Vec<_> {
        g.cols.iter().map(|c| (c.label.clone(), c.expert)).collect()
    };
    let (fused_rows, fused_cols) = (v.experts.row_layers.clone(), experts_of(&v.experts));
    let idx = v.idx;

    // Split while the fused statistics still run: they are cancelled, the split ones start.
    cmd(&mut app, Command::SplitGateUp);
    let effects = app.take_effects();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Cancel(j) if *j == fused_job)),
        "{effects:?}"
    );
    let (split_job, split) = effects
        .iter()
        .find_map(|e| match e {
            Effect::Stats { job, adapter } => Some((*job, adapter.clone())),
            _ => None,
        })
        .expect("statistics of the split layout start");
    assert!(targets(&split).contains("gate_proj") && targets(&split).contains("up_proj"));
    assert!(!targets(&split).contains("gate_up_proj"));
    let n_fused = fused
        .deltas
        .iter()
        .filter(|d| d.target == "gate_up_proj")
        .count();
    assert!(n_fused > 0);
    assert_eq!(split.deltas.len(), fused.deltas.len() + n_fused);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert!(v.split_gate_up());
    assert_eq!(
        v.expert_targets,
        ["gate_proj", "up_proj", "down_proj"],
        "the expert map's targets"
    );
    assert_eq!(v.expert_targets[v.expert_target], "gate_proj");
    assert_eq!(v.experts.row_layers, fused_rows, "the same layers");
    assert_eq!(experts_of(&v.experts), fused_cols, "the same experts");
    assert!(title_line(&mut app).contains("gate/up split · statistics 0/"));

    // A late result of the fused layout reaches neither the view nor the cache.
    let st = stats::compute(&fused, &Filter::default(), &Control::default()).unwrap();
    app.update(Action::Done {
        job: fused_job,
        result: Ok(st.into()),
        secs: 0.1,
    });
    assert!(app.stats_of(idx).is_none());
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert!(v.stats_rows.is_empty() && v.experts.range(&[0]).is_none());

    // The split layout's statistics fill the maps and Stats with gate and up deltas.
    let st = stats::compute(&split, &Filter::default(), &Control::default()).unwrap();
    app.update(Action::Done {
        job: split_job,
        result: Ok(st.into()),
        secs: 0.1,
    });
    cmd(&mut app, Command::View(3));
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    let st = v.stats(&app.jobs).unwrap().clone();
    assert_eq!(v.stats_rows.len(), split.deltas.len());
    let shown: std::collections::BTreeSet<&str> =
        st.deltas.iter().map(|d| d.target.as_str()).collect();
    assert!(shown.contains("gate_proj") && shown.contains("up_proj"));
    assert!(!shown.contains("gate_up_proj"));
    assert!(title_line(&mut app).contains("gate/up split · statistics ready"));

    // Back to fused: gate_up_proj again, its statistics computed (they were cancelled).
    cmds(&mut app, &[Command::View(2), Command::SplitGateUp]);
    let (again_job, again) = stats_job(&mut app);
    assert!(targets(&again).contains("gate_up_proj"));
    assert!(!targets(&again).contains("gate_proj"));
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert!(!v.split_gate_up());
    assert_eq!(v.expert_targets[v.expert_target], "gate_up_proj");
    assert!(!title_line(&mut app).contains("gate/up split"));
    let st = stats::compute(&again, &Filter::default(), &Control::default()).unwrap();
    app.update(Action::Done {
        job: again_job,
        result: Ok(st.into()),
        secs: 0.1,
    });
    assert!(app.stats_of(idx).is_some());
    // And split once more: the split statistics were kept, nothing is recomputed.
    cmd(&mut app, Command::SplitGateUp);
    assert!(app.take_effects().is_empty());
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert!(v.experts.range(&[0]).is_some(), "the expert map has values");
    assert_eq!(v.stats_rows.len(), split.deltas.len());
}

#[test]
fn mouse_selects_sorts_switches_tabs_and_scrolls() {
    let (_d, mut app) = new_app(true);
    draw(&mut app, W, H);
    let list = app.hits.list.clone().unwrap();
    // A click on the third row selects it, a second click opens it.
    let y = list.body.y + 2;
    app.update(Action::Click { x: 10, y });
    assert_eq!(app.list.selected, 2);
    app.update(Action::Click { x: 10, y });
    assert!(matches!(app.screen, Screen::Adapter(_)));
    // Tabs are clickable.
    draw(&mut app, W, H);
    let (r, _) = app.hits.tabs[2];
    app.update(Action::Click { x: r.x + 1, y: r.y });
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Experts);
    cmd(&mut app, Command::Back);
    // A click on a header sorts by that column; again reverses.
    draw(&mut app, W, H);
    let list = app.hits.list.clone().unwrap();
    let (x, _) = list.cols[7]; // SIZE
    app.update(Action::Click {
        x,
        y: list.header_y,
    });
    assert_eq!(app.list.sort, lorascope::tui::model::ListColumn::Size);
    assert!(app.list.asc);
    app.update(Action::Click {
        x,
        y: list.header_y,
    });
    assert!(!app.list.asc);
    // The wheel moves the selection.
    cmd(&mut app, Command::Top);
    app.update(Action::Scroll {
        x: 5,
        y: 5,
        down: true,
    });
    assert_eq!(app.list.selected, 3);
}

#[test]
fn help_lists_the_keys_of_the_view_it_was_opened_on() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::Help]);
    let h = app.help.as_ref().unwrap();
    assert_eq!(h.modes[0], keymap::Mode::Tree);
    assert_eq!(app.modes()[0], keymap::Mode::Help);
    // Keys other than close/scroll do nothing while help is open.
    cmd(&mut app, Command::NextView);
    let Screen::Adapter(v) = &app.screen else {
        unreachable!()
    };
    assert_eq!(v.tab, Tab::Tree);
    cmd(&mut app, Command::Escape);
    assert!(app.help.is_none());
    assert!(
        matches!(app.screen, Screen::Adapter(_)),
        "Esc closed only the popup"
    );
}

#[test]
fn plot_key_writes_the_views_png_into_the_export_dir() {
    let (_d, mut app) = new_app(true);
    let out = tempfile::tempdir().unwrap();
    app.export_dir = out.path().to_path_buf();
    let export = |app: &mut App| {
        let effects = app.take_effects();
        assert!(
            effects.iter().any(|e| matches!(e, Effect::ExportPlot)),
            "p queues the export: {effects:?}"
        );
        let r = lorascope::tui::export::export_plot(app);
        app.update(Action::PlotDone(r.clone()));
        r
    };
    // Nothing to plot from the list (p is not bound there), nor before the statistics.
    assert!(lorascope::tui::export::export_plot(&app).is_err());
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::ExportPlot]);
    assert!(export(&mut app)
        .unwrap_err()
        .contains("statistics are not ready"));
    // Each view's figure, named after the adapter and the view.
    cmd(&mut app, Command::View(1));
    run_effects(&mut app);
    let mut written = vec![];
    for tab in 1..4 {
        cmds(&mut app, &[Command::View(tab), Command::ExportPlot]);
        let path = export(&mut app).unwrap();
        assert!(app.status.as_deref().unwrap().contains("plot written to"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        written.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(
        written,
        [
            "fixtures-moe-peft-layers.png",
            "fixtures-moe-peft-experts-gate_up_proj.png",
            "fixtures-moe-peft-spectrum-q_proj-layer0.png"
        ]
    );
    // Compare: both adapters and their cosine in one figure.
    cmd(&mut app, Command::Back);
    cmd(&mut app, Command::Mark);
    select(&mut app, "fixtures/attn-r8");
    cmds(&mut app, &[Command::Mark, Command::Compare]);
    run_effects(&mut app);
    cmd(&mut app, Command::ExportPlot);
    let path = export(&mut app).unwrap();
    assert!(path.ends_with("fixtures-moe-peft-vs-fixtures-attn-r8-layers.png"));
}

/// `p`'s figure against the grid it was drawn from: one PNG cell per grid cell, in the grid's
/// order (rows down, columns across, same labels), each in the colour of its kind and value on
/// the grid's scale; and the screen's cells in the same colours as the PNG's.
fn assert_png_is_the_grid(app: &mut App, grid: &Grid, measure: Measure) {
    let (path, r) = lorascope::tui::export::export_view(app).unwrap();
    let img = Image::read(&path);
    let (nr, nc) = (grid.rows.len(), grid.cols.len());
    assert!(nr > 0 && nc > 0);
    assert_eq!(
        r.cells.len(),
        nr * nc,
        "{}: one cell per grid cell",
        path.display()
    );
    let k = measure.index();
    let scale = measure.scale(&[grid]).expect("statistics give values");
    let term = draw(app, W, H);
    let hits = app.hits.heatmap.clone().expect("a map on screen");
    let mut values = 0;
    for (i, c) in r.cells.iter().enumerate() {
        let (row, col) = (i / nc, i % nc);
        assert_eq!(c.row, grid.rows[row]);
        assert_eq!(c.col, grid.cols[col].lines().join(" "));
        if col > 0 {
            let left = &r.cells[i - 1];
            assert!(c.x0 > left.x0 && c.y0 == left.y0, "{c:?} after {left:?}");
        }
        if row > 0 {
            let above = &r.cells[i - nc];
            assert!(c.y0 > above.y0 && c.x0 == above.x0, "{c:?} below {above:?}");
        }
        let px = img.px(c.x0 + 1, c.y0 + 1);
        match grid.kind(row, col, k) {
            CellKind::Empty => assert!(
                px[0] == px[1] && px[1] == px[2] && px[0] >= 150,
                "empty cell {c:?} is {px:?}"
            ),
            // A figure draws a pending value as a cell without one.
            CellKind::Present | CellKind::Pending => {
                assert_eq!(px, present_color(grid.cols[col].emphasis), "{c:?}")
            }
            CellKind::Value(v) => {
                assert_eq!(px, scale.color(v), "{c:?}");
                assert_eq!(c.value, Some(v));
                values += 1;
            }
            CellKind::NonFinite => assert_eq!(px, lorascope::view::grid::NONFINITE, "{c:?}"),
        }
        // The same cell on screen, when it is shown in full (one grid row per line).
        let (dr, dc) = (
            row.wrapping_sub(hits.row_offset),
            col.wrapping_sub(hits.col_offset),
        );
        let x = hits.cells.x as usize + dc * hits.cell_w as usize;
        let y = hits.cells.y as usize + dr;
        let shown = hits.rows_per_line == 1
            && x < (hits.cells.x + hits.cells.width) as usize
            && y < (hits.cells.y + hits.cells.height) as usize;
        if let (true, CellKind::Value(_)) = (shown, grid.kind(row, col, k)) {
            let bg = term.backend().buffer()[(x as u16, y as u16)].bg;
            assert_eq!(
                bg,
                Color::Rgb(px[0], px[1], px[2]),
                "screen cell {row},{col}"
            );
        }
    }
    assert!(values > 0, "no value drawn");
}

#[test]
fn plot_key_exports_the_grid_on_screen() {
    let (_d, mut app) = new_app(true);
    let out = tempfile::tempdir().unwrap();
    app.export_dir = out.path().to_path_buf();
    let adapter = |app: &App| match &app.screen {
        Screen::Adapter(v) => v.clone(),
        _ => panic!("not an adapter screen"),
    };
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    // The layer map in another metric than the default.
    cmd(&mut app, Command::NextMetric);
    let v = adapter(&app);
    assert_png_is_the_grid(&mut app, &v.layers, Measure::Delta(v.metric));
    // The expert map of the second target: only the layers with its expert LoRA, as on screen.
    cmds(&mut app, &[Command::View(2), Command::NextTarget]);
    let v = adapter(&app);
    assert_eq!(v.experts.rows, ["0", "7", "15", "23"]);
    assert_png_is_the_grid(&mut app, &v.experts, Measure::Delta(v.metric));
    // Full tensors (a saved router) are cells without a value, on screen and in the figure.
    cmd(&mut app, Command::Back);
    select(&mut app, "fixtures/router");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    let v = adapter(&app);
    assert!(v.layers.cells.iter().flatten().any(|c| c.text == "full"));
    assert_png_is_the_grid(&mut app, &v.layers, Measure::Delta(v.metric));
    // Compare: its cosines on the diverging scale, then its norms.
    cmd(&mut app, Command::Back);
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Mark);
    select(&mut app, "fixtures/tinker-3d");
    cmds(&mut app, &[Command::Mark, Command::Compare]);
    run_effects(&mut app);
    for _ in 0..2 {
        let Screen::Compare(v) = &app.screen else {
            panic!("not the compare screen")
        };
        let (grid, metric) = (v.model.as_ref().unwrap().grid.clone(), v.metric);
        assert_png_is_the_grid(&mut app, &grid, Measure::Compare(metric));
        cmds(&mut app, &[Command::NextMetric, Command::NextMetric]);
    }
}

#[test]
fn error_adapters_open_without_statistics() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/corrupt");
    cmd(&mut app, Command::Open);
    for t in 0..4 {
        cmd(&mut app, Command::View(t));
        for c in [
            Command::Down,
            Command::Right,
            Command::Open,
            Command::NextMetric,
        ] {
            cmd(&mut app, c);
        }
        draw(&mut app, W, H);
    }
    assert!(
        app.take_effects().is_empty(),
        "nothing to compute on a corrupt file"
    );
    // Comparing with it fails with a message instead of a job.
    cmd(&mut app, Command::Back);
    cmd(&mut app, Command::Mark);
    select(&mut app, "fixtures/attn-r8");
    cmds(&mut app, &[Command::Mark, Command::Compare]);
    assert!(app.take_effects().is_empty());
    let Screen::Compare(v) = &app.screen else {
        panic!("c opens the compare screen");
    };
    assert!(matches!(
        app.jobs.get(&JobKey::Compare(v.a, v.b)),
        Some(Job::Failed(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Drawing: no panic at any size, no colour under NO_COLOR

/// Every screen the app can show, reached by commands.
fn every_screen(color: bool) -> Vec<(&'static str, tempfile::TempDir, App)> {
    let mut out = vec![];
    let (d, mut app) = new_app(color);
    app.scan = lorascope::tui::app::ScanState::Scanning {
        what: "scanning".into(),
        done: 3,
        total: 7,
    };
    out.push(("scanning", d, app));
    let (d, app) = new_app(color);
    out.push(("list", d, app));
    for id in [
        "fixtures/moe-peft",
        "fixtures/tinker-3d",
        "fixtures/corrupt",
        "fixtures/empty",
        "fixtures/router",
    ] {
        for tab in 0..5 {
            let (d, mut app) = new_app(color);
            select(&mut app, id);
            cmds(&mut app, &[Command::Open, Command::View(tab)]);
            // Before and after the statistics.
            let (d2, mut app2) = new_app(color);
            select(&mut app2, id);
            cmds(&mut app2, &[Command::Open, Command::View(tab)]);
            run_effects(&mut app2);
            out.push(("adapter", d, app));
            out.push(("adapter+stats", d2, app2));
        }
    }
    let (d, mut app) = new_app(color);
    select(&mut app, "fixtures/attn-r8");
    cmd(&mut app, Command::Mark);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Mark, Command::Compare]);
    run_effects(&mut app);
    out.push(("compare", d, app));
    let (d, mut app) = new_app(color);
    cmd(&mut app, Command::Help);
    out.push(("help", d, app));
    out
}

#[test]
fn no_size_makes_drawing_panic() {
    for (_name, _d, mut app) in every_screen(true) {
        for (w, h) in [
            (0, 0),
            (1, 1),
            (20, 5),
            (7, 30),
            (40, 10),
            (80, 24),
            (300, 80),
        ] {
            draw(&mut app, w, h);
            // Keys after a tiny frame (page size 0 or 1) must not panic either.
            for c in [
                Command::PageDown,
                Command::Bottom,
                Command::PageUp,
                Command::Right,
            ] {
                cmd(&mut app, c);
            }
            draw(&mut app, w, h);
        }
    }
}

#[test]
fn rows_that_do_not_fit_fold_into_half_blocks_with_colour_and_scroll_without() {
    for color in [true, false] {
        let (_d, mut app) = new_app(color);
        select(&mut app, "fixtures/tinker-3d");
        cmds(&mut app, &[Command::Open, Command::View(2)]);
        run_effects(&mut app);
        let t = draw(&mut app, W, 24);
        let h = app.hits.heatmap.clone().unwrap();
        assert_eq!(h.nrows, 24);
        let text = t.backend().to_string();
        if color {
            assert_eq!(h.rows_per_line, 2, "24 layers in fewer lines: two per line");
            assert!(text.contains('▀'));
        } else {
            assert_eq!(
                h.rows_per_line, 1,
                "shades cannot share a cell: scroll instead"
            );
            // The cursor stays visible as it moves to the last layer.
            cmd(&mut app, Command::Bottom);
            draw(&mut app, W, 24);
            let h = app.hits.heatmap.clone().unwrap();
            assert!(h.row_offset > 0 && h.row_offset + (h.cells.height as usize) >= 24);
        }
        // A click maps back to the cell under it.
        let h = app.hits.heatmap.clone().unwrap();
        let (x, y) = (h.cells.x + h.cell_w * 3, h.cells.y + 1);
        app.update(Action::Click { x, y });
        let Screen::Adapter(v) = &app.screen else {
            unreachable!()
        };
        assert_eq!(v.expert_cursor.1, h.col_offset + 3);
        assert_eq!(v.expert_cursor.0, h.row_offset + h.rows_per_line as usize);
    }
}

#[test]
fn no_color_means_no_colour_anywhere() {
    for (name, _d, mut app) in every_screen(false) {
        let t = draw(&mut app, W, H);
        for c in t.backend().buffer().content() {
            assert!(
                c.fg == Color::Reset && c.bg == Color::Reset,
                "{name}: a coloured cell {c:?}"
            );
        }
    }
    // And with colour, the heatmaps do use it.
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    let t = draw(&mut app, W, H);
    assert!(t
        .backend()
        .buffer()
        .content()
        .iter()
        .any(|c| matches!(c.bg, Color::Rgb(..))));
}

/// The views docs/explorer.md shows, as plain text from the committed snapshots.
const DOC_VIEWS: [&str; 19] = [
    "list",
    "error_row",
    "filter",
    "tree",
    "layer_map",
    "expert_map",
    "stats",
    "health",
    "compare",
    "help",
    "base__expert_map_streaming",
    "base__stats_streaming",
    "base__stats_dora",
    "base__merged_layer_map",
    "base__merged_stats",
    "export_panel__panel",
    "export_panel__panel_gguf",
    "runs__list_run_expanded",
    "runs__run",
];

fn capture(name: &str) -> String {
    let path = format!(
        "{}/tests/snapshots/tui__{name}.snap",
        env!("CARGO_MANIFEST_DIR")
    );
    let snap = std::fs::read_to_string(path).unwrap();
    let body = snap.splitn(3, "---\n").nth(2).unwrap();
    body.lines()
        .map(|l| l.trim_start_matches('"').trim_end_matches('"').trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

fn repo_text(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn docs_show_every_view_as_snapshotted() {
    let docs = repo_text("docs/explorer.md");
    for name in DOC_VIEWS {
        let c = capture(name);
        assert!(
            docs.contains(&format!("```text\n{c}\n```")),
            "docs/explorer.md lacks the current capture of '{name}':\n{c}"
        );
    }
    let c = capture("list");
    assert!(
        repo_text("README.md").contains(&format!("```text\n{c}\n```")),
        "README.md lacks the current capture of 'list':\n{c}"
    );
}

#[test]
fn docs_key_table_is_the_keymap() {
    let table = keymap::markdown_table();
    assert!(
        repo_text("docs/explorer.md").contains(&table),
        "docs/explorer.md's key table differs from the keymap; paste this:\n{table}"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots of every view at 120×36 (heatmaps without colour, so shades show in text)

fn snap(app: &mut App) -> Terminal<TestBackend> {
    draw(app, W, H)
}

#[test]
fn snapshot_list() {
    let (_d, mut app) = new_app(true);
    app.note = Some("no adapters in ~/.cache/huggingface/hub; showing the demo cache".into());
    insta::assert_snapshot!("list", snap(&mut app).backend());
}

#[test]
fn snapshot_scanning() {
    let mut app = App::new(Options {
        color: true,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    });
    app.update(Action::ScanProgress {
        what: "reading adapter headers".into(),
        done: 37,
        total: 140,
    });
    insta::assert_snapshot!("scanning", snap(&mut app).backend());
}

#[test]
fn snapshot_error_row() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/corrupt");
    insta::assert_snapshot!("error_row", snap(&mut app).backend());
}

#[test]
fn snapshot_filter() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Filter);
    for c in "expert".chars() {
        app.update(Action::Input(c));
    }
    insta::assert_snapshot!("filter", snap(&mut app).backend());
}

#[test]
fn snapshot_tree() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Open);
    // Open gate_up_proj's module and its experts.
    cmds(&mut app, &[Command::Down; 5]);
    cmds(
        &mut app,
        &[
            Command::Expand,
            Command::Down,
            Command::Down,
            Command::Down,
            Command::Expand,
        ],
    );
    insta::assert_snapshot!("tree", snap(&mut app).backend());
}

#[test]
fn snapshot_layer_map_before_statistics() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    insta::assert_snapshot!("layer_map_waiting", snap(&mut app).backend());
}

#[test]
fn snapshot_layer_map() {
    let (_d, mut app) = new_app(false);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(1)]);
    run_effects(&mut app);
    cmds(&mut app, &[Command::Down; 7]);
    cmds(&mut app, &[Command::Right; 4]);
    insta::assert_snapshot!("layer_map", snap(&mut app).backend());
}

#[test]
fn snapshot_expert_map() {
    let (_d, mut app) = new_app(false);
    select(&mut app, "fixtures/tinker-3d");
    cmds(&mut app, &[Command::Open, Command::View(2)]);
    run_effects(&mut app);
    cmds(
        &mut app,
        &[Command::Down, Command::Down, Command::Right, Command::Right],
    );
    insta::assert_snapshot!("expert_map", snap(&mut app).backend());
}

#[test]
fn snapshot_stats_with_spectrum() {
    let (_d, mut app) = new_app(true);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Open, Command::View(3)]);
    run_effects(&mut app);
    insta::assert_snapshot!("stats", snap(&mut app).backend());
}

#[test]
fn snapshot_health() {
    let (_d, mut app) = sick_app();
    cmds(&mut app, &[Command::Open, Command::View(4)]);
    run_effects(&mut app);
    insta::assert_snapshot!("health", snap(&mut app).backend());
}

#[test]
fn snapshot_compare() {
    let (_d, mut app) = new_app(false);
    select(&mut app, "fixtures/attn-r8");
    cmd(&mut app, Command::Mark);
    select(&mut app, "fixtures/moe-peft");
    cmds(&mut app, &[Command::Mark, Command::Compare]);
    run_effects(&mut app);
    insta::assert_snapshot!("compare", snap(&mut app).backend());
}

#[test]
fn snapshot_help() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Help);
    insta::assert_snapshot!("help", snap(&mut app).backend());
}

#[test]
fn snapshot_fetch_popup() {
    let (_d, mut app) = new_app(true);
    cmd(&mut app, Command::Fetch);
    for c in "openai/gpt-oss-lora@main".chars() {
        app.update(Action::Input(c));
    }
    insta::assert_snapshot!("fetch_popup", snap(&mut app).backend());
}

#[path = "tui/export_panel.rs"]
mod export_panel;

#[path = "tui/runs.rs"]
mod runs;

// ---------------------------------------------------------------------------------------------
// Against the base model: `m` through relative change, amplification and alignment

mod base {
    use super::*;
    use lorascope::base::stats::{self as base_stats, BaseReport};
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    use lorascope::synth::Item;
    use lorascope::tui::model::{self, StatsColumn};
    use lorascope::view::grid::Metric;

    const DIMS: Dims = Dims {
        layers: 2,
        hidden: 64,
        q_out: 64,
        kv_out: 32,
        experts: 3,
        inter: 32,
    };

    /// A hub cache with a PEFT expert adapter naming openai/gpt-oss-20b (and that base when
    /// `with_base`), listed in an app.
    fn app(with_base: bool) -> (tempfile::TempDir, App) {
        let t = tempfile::tempdir().unwrap();
        let hub = t.path().join("hub");
        let mut spec = Spec::new(DIMS, Pattern::PeftExperts { layers: vec![0, 1] });
        spec.expert_rank = 2;
        let item = Item::Adapter {
            sub: String::new(),
            spec,
        };
        synth::write_hub_repo(&hub, "me/moe", &[item]).unwrap();
        if with_base {
            let b = BaseSpec::new(DIMS, ExpertStorage::Mxfp4);
            write_base(&hub, "openai/gpt-oss-20b", &b).unwrap();
        }
        let adapters: Vec<Adapter> =
            discovery::load_all(&discovery::discover_cache(&hub), LayoutOptions::default())
                .into_iter()
                .filter(|a| a.id == "me/moe")
                .collect();
        assert_eq!(adapters.len(), 1);
        let mut app = App::new(Options::default());
        app.update(Action::ScanDone {
            adapters,
            note: None,
        });
        select(&mut app, "me/moe");
        (t, app)
    }

    fn view(app: &App) -> &lorascope::tui::screen::AdapterScreen {
        match &app.screen {
            Screen::Adapter(v) => v,
            _ => panic!("not on the adapter screen"),
        }
    }

    /// The metrics `m` shows from the current one, a full cycle and one more.
    fn cycle(app: &mut App) -> Vec<Metric> {
        (0..=Metric::ALL.len())
            .map(|_| {
                cmd(app, Command::NextMetric);
                view(app).metric
            })
            .collect()
    }

    /// The base statistics as `stats --base` computes them, independently of the explorer.
    fn reference(app: &App) -> BaseReport {
        let a = app.current_adapter().unwrap();
        let session = lorascope::base::session_for(a, None, &[]).unwrap();
        base_stats::compute(&session, a, &Filter::default(), &Control::default()).unwrap()
    }

    #[test]
    fn m_reaches_the_base_metrics_and_the_maps_hold_base_stats_values() {
        let (_t, mut app) = app(true);
        cmds(&mut app, &[Command::Open, Command::View(2)]);
        let effects = app.take_effects();
        let key = JobKey::Base(0, false);
        assert!(
            matches!(
                effects.as_slice(),
                [Effect::Stats { .. }, Effect::Base { .. }]
            ),
            "the base is found: its statistics start with the adapter's own: {effects:?}"
        );
        // Progress shows in the title while it runs.
        let Effect::Base { job, .. } = &effects[1] else {
            unreachable!()
        };
        app.update(Action::Progress {
            job: *job,
            done: 1,
            total: 12,
        });
        assert!(title_line(&mut app).contains("base 1/12"));
        // Run both (the explorer's event loop would, in the background).
        for e in effects {
            app.jobs.request(e);
        }
        run_effects(&mut app);
        assert!(matches!(app.jobs.get(&key), Some(Job::Ready(_))));
        let seen = cycle(&mut app);
        for m in Metric::ALL {
            assert!(seen.contains(&m), "m never shows {m:?}: {seen:?}");
        }
        // Every expert cell (one delta each) holds base::stats' value of its delta.
        let want = reference(&app);
        let a = app.current_adapter().unwrap().clone();
        let v = view(&app);
        let mut checked = 0;
        for (r, layer) in v.experts.row_layers.iter().enumerate() {
            for (c, col) in v.experts.cols.iter().enumerate() {
                let Some(cell) = v.experts.cell(r, c) else {
                    continue;
                };
                let i = a
                    .deltas
                    .iter()
                    .position(|d| {
                        d.layer == *layer && d.target == col.target && Some(d.expert) == col.expert
                    })
                    .unwrap();
                for m in Metric::BASE {
                    let got = cell.values[m.index()];
                    assert_eq!(got, m.of_base(&want.deltas[i]), "{m:?} of delta {i}");
                    assert!(got.is_some_and(f64::is_finite));
                }
                checked += 1;
            }
        }
        assert_eq!(checked, DIMS.layers * DIMS.experts);
        // The Stats tab shows the base columns, with the same numbers.
        cmd(&mut app, Command::View(3));
        let v = view(&app);
        assert_eq!(v.stats_cols, StatsColumn::shown(true));
        let st = app.stats_of(0).unwrap();
        let row = v.stats_rows[v.stats_sel];
        let model::StatsRow::Delta(k) = row else {
            panic!("the first row is a delta");
        };
        let d = st.deltas[k].index;
        let cell = model::stats_cell(st, Some(&want), row, StatsColumn::Relative);
        assert_eq!(
            cell,
            lorascope::view::text::num(want.deltas[d].relative_change.unwrap())
        );
        let screen = format!("{:?}", draw(&mut app, 160, H).backend().buffer());
        assert!(screen.contains("RELATIVE") && screen.contains("ALIGN"));
    }

    #[test]
    fn without_a_base_m_cycles_as_before_and_says_why_once() {
        let (_t, mut app) = app(false);
        cmds(&mut app, &[Command::Open, Command::View(1)]);
        let effects = app.take_effects();
        assert!(
            matches!(effects.as_slice(), [Effect::Stats { .. }]),
            "no base, no base job: {effects:?}"
        );
        for e in effects {
            app.jobs.request(e);
        }
        run_effects(&mut app);
        cmd(&mut app, Command::NextMetric);
        let said = app.status.clone().unwrap_or_default();
        assert!(
            said.starts_with("no base metrics:") && said.contains("openai/gpt-oss-20b"),
            "{said}"
        );
        cmd(&mut app, Command::NextMetric);
        assert_eq!(app.status, None, "said once");
        let seen = cycle(&mut app);
        assert!(
            seen.iter().all(|m| Metric::OWN.contains(m)),
            "only the adapter's own metrics: {seen:?}"
        );
        let v = view(&app);
        assert_eq!(v.stats_cols, StatsColumn::shown(false));
    }

    #[test]
    fn i_computes_the_selected_deltas_intruder_dimensions_in_the_background() {
        let (_t, mut app) = app(true);
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        run_effects(&mut app);
        // The last row: an expert delta (rows sorted by layer).
        cmd(&mut app, Command::Bottom);
        let v = view(&app);
        let st = app.stats_of(0).unwrap().clone();
        let model::StatsRow::Delta(row) = v.stats_rows[v.stats_sel] else {
            panic!("a delta row");
        };
        let d = st.deltas[row].clone();
        cmd(&mut app, Command::Intruders);
        let effects = app.take_effects();
        let [Effect::Intruders { job, delta, .. }] = effects.as_slice() else {
            panic!("i starts one job: {effects:?}");
        };
        assert_eq!(*delta, d.index);
        let key = JobKey::Intruders(0, false, d.index);
        assert!(title_line(&mut app).contains("intruder dimensions…"));
        // Esc cancels it (and stays); a second `i` starts it again.
        let job = *job;
        cmd(&mut app, Command::Escape);
        assert!(matches!(app.take_effects().as_slice(), [Effect::Cancel(j)] if *j == job));
        assert!(matches!(app.screen, Screen::Adapter(_)) && !app.jobs.contains(&key));
        cmd(&mut app, Command::Intruders);
        run_effects(&mut app);
        // What `stats --deep` computes for that delta.
        let a = app.current_adapter().unwrap();
        let session = lorascope::base::session_for(a, None, &[]).unwrap();
        let filter = Filter {
            target: Some(d.target.to_string()),
            layer: d.layer,
            expert: d.expert,
        };
        let opts = Some(base_stats::IntruderOpts::default());
        let want = base_stats::compute_deep(&session, a, &filter, &Control::default(), opts)
            .unwrap()
            .deltas[0]
            .intruders
            .clone()
            .unwrap();
        assert_eq!(app.jobs.intruders(&key), Some(&want));
        let said = app.status.clone().unwrap_or_default();
        assert!(
            said.starts_with(&format!("{} intruder dimensions in the top 10", want.count)),
            "{said}"
        );
        // Asked again: the kept result, no new job.
        cmd(&mut app, Command::Intruders);
        assert!(app.take_effects().is_empty());
    }

    #[test]
    fn i_without_a_base_says_why() {
        let (_t, mut app) = app(false);
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        run_effects(&mut app);
        cmd(&mut app, Command::Intruders);
        assert!(app.take_effects().is_empty());
        let said = app.status.clone().unwrap_or_default();
        assert!(said.starts_with("no intruder dimensions:"), "{said}");
    }

    #[test]
    fn a_base_that_cannot_be_opened_says_so_and_keeps_the_own_metrics() {
        let (t, mut app) = app(true);
        // Another architecture: found, but its job fails with the reason.
        let snaps = t.path().join("hub/models--openai--gpt-oss-20b/snapshots");
        let snap = std::fs::read_dir(snaps)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let cfg = snap.join("config.json");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::remove_file(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("gpt_oss", "llama")).unwrap();
        cmds(&mut app, &[Command::Open, Command::View(1)]);
        run_effects(&mut app);
        assert!(matches!(
            app.jobs.get(&JobKey::Base(0, false)),
            Some(Job::Failed(_))
        ));
        let said = app.status.clone().unwrap_or_default();
        assert!(said.starts_with("no base metrics:"), "{said}");
        let seen = cycle(&mut app);
        assert!(seen.iter().all(|m| Metric::OWN.contains(m)), "{seen:?}");
        // Esc from the view goes back (nothing runs any more).
        cmd(&mut app, Command::Escape);
        assert!(matches!(app.screen, Screen::List));
    }

    // -----------------------------------------------------------------------------------------
    // Streamed base statistics, merged models minus their base, DoRA updates

    /// Runs the adapter's own statistics and hands back the base job's work (not run).
    fn own_stats_then_base(app: &mut App) -> (u64, Arc<Adapter>, String, PathBuf) {
        let mut base = None;
        for e in app.take_effects() {
            match e {
                Effect::Base {
                    job,
                    adapter,
                    id,
                    dir,
                } => base = Some((job, adapter, id, dir)),
                e => app.jobs.request(e),
            }
        }
        run_effects(app);
        base.expect("the base job starts")
    }

    /// Every report the base job publishes (as the runner sends them, without its rate limit),
    /// and its result.
    fn streamed(adapter: &Adapter, id: &str, dir: &Path) -> (Vec<BaseReport>, BaseReport) {
        let mut parts = vec![];
        let ctl = Control::default();
        let fin = event::BaseSessions::default()
            .report_streamed(adapter, id, dir, &ctl, &mut |r| parts.push(r))
            .unwrap();
        (parts, fin)
    }

    /// The delta of the adapter shown at an expert-map cell.
    fn delta_at(app: &App, g: &Grid, r: usize, c: usize) -> usize {
        let a = app.current_adapter().unwrap();
        let (layer, col) = (g.row_layers[r], &g.cols[c]);
        a.deltas
            .iter()
            .position(|d| {
                d.layer == layer && d.target == col.target && Some(d.expert) == col.expert
            })
            .unwrap()
    }

    #[test]
    fn base_values_stream_in_and_pending_cells_are_distinct() {
        let (_t, mut app) = app(true);
        cmds(&mut app, &[Command::Open, Command::View(2)]);
        let (job, adapter, id, dir) = own_stats_then_base(&mut app);
        let (parts, fin) = streamed(&adapter, &id, &dir);
        // The relative change of every delta, then one report per layer with its
        // amplification, then one per layer with its alignment but the last (the result).
        assert_eq!(parts.len(), 2 * DIMS.layers);
        assert_eq!(
            fin,
            reference(&app),
            "the streamed result is `stats --base`'s"
        );
        let (rel, amp, ali) = (
            Metric::Relative.index(),
            Metric::Amplification.index(),
            Metric::Alignment.index(),
        );
        app.update(Action::Partial {
            job,
            output: parts[0].clone().into(),
        });
        assert!(matches!(
            app.jobs.get(&JobKey::Base(0, false)),
            Some(Job::Running { .. })
        ));
        // Relative change everywhere at once; amplification and alignment pending, not none.
        let g = view(&app).experts.clone();
        let mut cells = 0;
        for r in 0..g.rows.len() {
            for c in 0..g.cols.len() {
                let i = delta_at(&app, &g, r, c);
                let want = fin.deltas[i].relative_change.unwrap();
                assert_eq!(g.kind(r, c, rel), CellKind::Value(want));
                assert_eq!(g.kind(r, c, amp), CellKind::Pending);
                assert_eq!(g.kind(r, c, ali), CellKind::Pending);
                cells += 1;
            }
        }
        assert_eq!(cells, DIMS.layers * DIMS.experts);
        // `m` reaches the base metrics while they stream; the map says what is pending.
        while view(&app).metric != Metric::Amplification {
            cmd(&mut app, Command::NextMetric);
        }
        let screen = screen_text(&draw(&mut app, 120, H));
        assert!(screen.contains("… computing"), "{screen}");
        // The Stats table: the relative change in numbers, the rest pending ("-" is "none").
        cmd(&mut app, Command::View(3));
        let st = app.stats_of(0).unwrap().clone();
        let row = view(&app).stats_rows[0];
        let model::StatsRow::Delta(k) = row else {
            panic!("a delta row first");
        };
        let d = st.deltas[k].index;
        let cell = |c| model::stats_cell(&st, app.jobs.base(0, false).map(|b| &**b), row, c);
        assert_eq!(
            cell(StatsColumn::Relative),
            lorascope::view::text::num(fin.deltas[d].relative_change.unwrap())
        );
        assert_eq!(cell(StatsColumn::Amplification), model::PENDING);
        assert_eq!(cell(StatsColumn::Alignment), model::PENDING);
        // The first layer's amplification arrives (its alignment later); the second's is
        // still to come.
        app.update(Action::Partial {
            job,
            output: parts[1].clone().into(),
        });
        cmd(&mut app, Command::View(2));
        let g = view(&app).experts.clone();
        for r in 0..g.rows.len() {
            for c in 0..g.cols.len() {
                let i = delta_at(&app, &g, r, c);
                assert_eq!(g.kind(r, c, ali), CellKind::Pending);
                if g.row_layers[r] == Some(0) {
                    let want = fin.deltas[i].amplification.unwrap();
                    assert_eq!(g.kind(r, c, amp), CellKind::Value(want));
                } else {
                    assert_eq!(g.kind(r, c, amp), CellKind::Pending);
                }
            }
        }
        app.update(Action::Done {
            job,
            result: Ok(fin.clone().into()),
            secs: 0.5,
        });
        let v = view(&app);
        assert!((0..7).all(|k| !v.experts.has_pending(k) && !v.layers.has_pending(k)));
        assert_eq!(app.jobs.base(0, false).map(|b| &**b), Some(&fin));
    }

    #[test]
    fn a_stale_partial_is_dropped() {
        let (_t, mut app) = app(true);
        cmds(&mut app, &[Command::Open, Command::View(1)]);
        let (job, adapter, id, dir) = own_stats_then_base(&mut app);
        let (parts, fin) = streamed(&adapter, &id, &dir);
        // Cancelled: what it had computed never reaches the view.
        cmd(&mut app, Command::Escape);
        assert!(matches!(app.screen, Screen::Adapter(_)));
        app.update(Action::Partial {
            job,
            output: parts[0].clone().into(),
        });
        assert!(app.jobs.base(0, false).is_none());
        let v = view(&app);
        let rel = Metric::Relative.index();
        assert!(v
            .layers
            .cells
            .iter()
            .flatten()
            .all(|c| c.values[rel].is_none()));
        assert!(!v.layers.has_pending(Metric::Amplification.index()));
        // Computed again: after its result, a late partial does not replace it.
        cmds(&mut app, &[Command::View(2), Command::View(1)]);
        let (job2, ..) = own_stats_then_base(&mut app);
        assert_ne!(job2, job);
        app.update(Action::Done {
            job: job2,
            result: Ok(fin.clone().into()),
            secs: 0.5,
        });
        app.update(Action::Partial {
            job: job2,
            output: parts[0].clone().into(),
        });
        assert_eq!(app.jobs.base(0, false).map(|b| &**b), Some(&fin));
        assert!(!view(&app).layers.has_pending(Metric::Amplification.index()));
    }

    /// A hub cache with a merged model of openai/gpt-oss-20b (BF16 experts; layer 1, experts 0
    /// and 2 changed) and, when `with_base`, that base (MXFP4), listed in an app.
    fn merged_app(with_base: bool) -> (tempfile::TempDir, App) {
        use lorascope::synth::base::{write_merged, Merge};
        let t = tempfile::tempdir().unwrap();
        let hub = t.path().join("hub");
        let b = BaseSpec::new(DIMS, ExpertStorage::Mxfp4);
        let merge = Merge {
            layers: vec![1],
            experts: vec![0, 2],
            rank: 2,
            relative: 0.05,
            seed: 3,
            storage: ExpertStorage::Bf16,
            base_model: "openai/gpt-oss-20b".into(),
        };
        write_merged(&hub, "me/merged", &b, &merge).unwrap();
        let adapters: Vec<Adapter> =
            discovery::load_all(&discovery::discover_cache(&hub), LayoutOptions::default())
                .into_iter()
                .filter(|a| a.id == "me/merged")
                .collect();
        assert_eq!(adapters.len(), 1);
        if with_base {
            write_base(&hub, "openai/gpt-oss-20b", &b).unwrap();
        }
        let mut app = App::new(Options::default());
        app.update(Action::ScanDone {
            adapters,
            note: None,
        });
        select(&mut app, "me/merged");
        (t, app)
    }

    #[test]
    fn a_merged_models_maps_and_stats_show_its_weights_minus_its_base() {
        use lorascope::base::{merged, Base};
        let (_t, mut app) = merged_app(true);
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        let effects = app.take_effects();
        assert!(
            matches!(
                effects.as_slice(),
                [Effect::Stats { .. }, Effect::Merged { .. }]
            ),
            "{effects:?}"
        );
        let Effect::Merged { job, .. } = &effects[1] else {
            unreachable!()
        };
        app.update(Action::Progress {
            job: *job,
            done: 3,
            total: 30,
        });
        assert!(title_line(&mut app).contains("merged − base 3/30"));
        for e in effects {
            app.jobs.request(e);
        }
        run_effects(&mut app);
        // What `stats MERGED --base` computes, independently of the explorer.
        let a = app.current_adapter().unwrap().clone();
        let (id, dir) =
            lorascope::base::locate(&a, None, &lorascope::base::cache_roots(&a, &[])).unwrap();
        let want = merged::compute(
            &Base::open(&a.id, &a.path).unwrap(),
            &Base::open(&id, &dir).unwrap(),
            &Filter::default(),
            &Control::default(),
        )
        .unwrap();
        assert!(want.changed > 0 && want.changed < want.compared);
        let find = |l: Option<usize>, t: &lorascope::adapter::target::Target, e: Option<usize>| {
            want.weights
                .iter()
                .filter(|w| {
                    Some(w.layer) == l && w.target == *t && e.is_none_or(|e| w.expert == Some(e))
                })
                .collect::<Vec<_>>()
        };
        // The Stats tab: a row per weight, its numbers.
        let v = view(&app);
        assert_eq!(v.stats_cols, StatsColumn::merged());
        let st = app.stats_of(0).unwrap();
        let data = model::StatsData {
            st,
            base: None,
            merged: app.jobs.merged(0).map(|m| &**m),
        };
        let mut rows = 0;
        for &r in &v.stats_rows {
            let model::StatsRow::Merged(i) = r else {
                continue;
            };
            let w = &want.weights[i];
            let num = lorascope::view::text::num;
            assert_eq!(data.cell(r, StatsColumn::Fro), num(w.fro_norm));
            assert_eq!(data.cell(r, StatsColumn::Spectral), num(w.spectral_norm));
            assert_eq!(
                data.cell(r, StatsColumn::Relative),
                num(w.relative_change.unwrap())
            );
            assert_eq!(
                data.cell(r, StatsColumn::ERank),
                format!("{:.2}", w.effective_rank)
            );
            rows += 1;
        }
        assert_eq!(rows, want.weights.len());
        let screen = screen_text(&draw(&mut app, 120, H));
        assert!(
            screen.contains(&format!(
                "merged minus base openai/gpt-oss-20b: {} of {} weights changed",
                want.changed, want.compared
            )),
            "{screen}"
        );
        // The layer map: the mean over a cell's weights (one, or the layer's experts).
        cmd(&mut app, Command::View(1));
        let g = view(&app).layers.clone();
        let mut cells = 0;
        for r in 0..g.rows.len() {
            for c in 0..g.cols.len() {
                let ws = find(g.row_layers[r], &g.cols[c].target, None);
                let mean = |f: &dyn Fn(&merged::MergedDelta) -> f64| {
                    ws.iter().map(|w| f(w)).sum::<f64>() / ws.len() as f64
                };
                let cell = g.cell(r, c).unwrap();
                let close = |got: Option<f64>, want: f64| {
                    let got = got.unwrap();
                    assert!(
                        (got - want).abs() <= 1e-12 * want.abs().max(1e-300),
                        "{got} vs {want}"
                    );
                };
                close(cell.values[Metric::Fro.index()], mean(&|w| w.fro_norm));
                close(
                    cell.values[Metric::Relative.index()],
                    mean(&|w| w.relative_change.unwrap()),
                );
                assert_eq!(cell.values[Metric::Amplification.index()], None);
                cells += 1;
            }
        }
        assert_eq!(cells, DIMS.layers * 7, "q k v o router gate_up down");
        // `m` cycles the merged metrics only.
        let seen: Vec<Metric> = (0..6)
            .map(|_| {
                cmd(&mut app, Command::NextMetric);
                view(&app).metric
            })
            .collect();
        assert!(seen.iter().all(|m| Metric::MERGED.contains(m)), "{seen:?}");
        assert!(seen.contains(&Metric::Relative));
        // The expert map: one weight per cell.
        cmd(&mut app, Command::View(2));
        let v = view(&app);
        assert_eq!(v.expert_targets.len(), 2);
        let g = &v.experts;
        for r in 0..g.rows.len() {
            for c in 0..g.cols.len() {
                let e = g.cols[c].expert.flatten();
                let ws = find(g.row_layers[r], &g.cols[c].target, e);
                assert_eq!(ws.len(), 1);
                let cell = g.cell(r, c).unwrap();
                assert_eq!(cell.values[Metric::Fro.index()], Some(ws[0].fro_norm));
                assert_eq!(cell.values[Metric::Srank.index()], Some(ws[0].stable_rank));
            }
        }
        assert_eq!(g.cells.iter().flatten().count(), DIMS.layers * DIMS.experts);
    }

    #[test]
    fn a_merged_models_status_maps_export_and_stats_tab_say_what_they_hold() {
        let (_t, mut app) = merged_app(true);
        let out = tempfile::tempdir().unwrap();
        app.export_dir = out.path().to_path_buf();
        cmds(&mut app, &[Command::Open, Command::View(1)]);
        let mut effects = app.take_effects();
        assert!(matches!(
            effects.as_slice(),
            [Effect::Stats { .. }, Effect::Merged { .. }]
        ));
        // Its own statistics first: full weights have norms, not deltas.
        let merged = effects.pop().unwrap();
        app.jobs.request(effects.pop().unwrap());
        run_effects(&mut app);
        let own = app.stats_of(0).unwrap().clone();
        assert!(own.deltas.is_empty() && !own.full_tensors.is_empty());
        let want = format!("norms of {} full tensors in", own.full_tensors.len());
        assert!(
            app.status.as_deref().unwrap().starts_with(&want),
            "{:?}",
            app.status
        );
        app.jobs.request(merged);
        run_effects(&mut app);
        assert!(app.status.as_deref().unwrap().contains("weights changed"));
        // Its maps export as shown: the differences, cell for cell.
        let v = view(&app).clone();
        assert_png_is_the_grid(&mut app, &v.layers, Measure::Delta(v.metric));
        cmd(&mut app, Command::View(2));
        let v = view(&app).clone();
        assert_png_is_the_grid(&mut app, &v.experts, Measure::Delta(v.metric));
        // Its Stats tab has no figure of the differences: said, and nothing written.
        cmd(&mut app, Command::View(3));
        let before = std::fs::read_dir(out.path()).unwrap().count();
        let e = lorascope::tui::export::export_plot(&app).unwrap_err();
        assert!(e.contains("merged model has no plot export yet"), "{e}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), before);
    }

    #[test]
    fn a_merged_model_without_its_base_says_why_in_one_line() {
        let (_t, mut app) = merged_app(false);
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        let effects = app.take_effects();
        assert!(
            matches!(effects.as_slice(), [Effect::Stats { .. }]),
            "{effects:?}"
        );
        for e in effects {
            app.jobs.request(e);
        }
        run_effects(&mut app);
        let screen = screen_text(&draw(&mut app, 120, H));
        let line = "merged minus base not shown: base model openai/gpt-oss-20b is not in the cache";
        assert!(screen.contains(line), "{screen}");
        cmd(&mut app, Command::View(1));
        let screen = screen_text(&draw(&mut app, 120, H));
        assert!(screen.contains(line), "{screen}");
    }

    /// An attention DoRA adapter (PEFT's magnitude vectors) whose base is in the hub cache the
    /// explorer is given, listed in an app: (the folder, the app, the adapter, the cache).
    fn dora_app() -> (tempfile::TempDir, App, Adapter, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let hub = t.path().join("hub");
        write_base(
            &hub,
            "openai/gpt-oss-20b",
            &BaseSpec::new(DIMS, ExpertStorage::Mxfp4),
        )
        .unwrap();
        // An attention DoRA: PEFT's magnitude vector (one value per output row) per module.
        let mut spec = Spec::new(DIMS, Pattern::Attention);
        spec.dtype = Dtype::F32;
        let mut g = synth::generate(&spec);
        let mut rng = synth::Rng::new(5);
        for l in 0..DIMS.layers {
            for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                let out = DIMS.attn_shape(p).0;
                let m: Vec<f64> = (0..out).map(|_| 0.5 + rng.uniform()).collect();
                g.tensors.push(synth::TensorData {
                    name: format!(
                        "base_model.model.model.layers.{l}.self_attn.{p}.lora_magnitude_vector"
                    ),
                    dtype: Dtype::F32,
                    shape: vec![out],
                    bytes: Some(synth::encode(&m, Dtype::F32)),
                });
            }
        }
        let ad = t.path().join("dora");
        std::fs::create_dir_all(&ad).unwrap();
        std::fs::write(
            ad.join(spec.pattern.file_name()),
            synth::safetensors_bytes(&g.tensors, true),
        )
        .unwrap();
        let mut config = g.config.clone();
        config["use_dora"] = true.into();
        std::fs::write(
            ad.join("adapter_config.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        let a = lorascope::adapter::Adapter::load(
            &discovery::discover_path(&ad).remove(0),
            LayoutOptions::default(),
        );
        assert!(a.is_dora() && a.error.is_none(), "{:?}", a.error);
        let mut app = App::new(Options::default());
        // The base is found in the cache the explorer was given.
        app.fetch_cache = Some(hub.clone());
        // A stable id and path in what is shown (snapshots).
        let mut a = a;
        a.id = "me/dora".into();
        a.path = PathBuf::from("/cache/dora");
        app.update(Action::ScanDone {
            adapters: vec![a.clone()],
            note: None,
        });
        (t, app, a, hub)
    }

    #[test]
    fn dora_columns_show_the_exact_update_next_to_the_factored_one() {
        let (_t, mut app, a, hub) = dora_app();
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        run_effects(&mut app);
        // `stats --base` of the same adapter.
        let session = lorascope::base::session_for(&a, None, &[hub]).unwrap();
        let want =
            base_stats::compute(&session, &a, &Filter::default(), &Control::default()).unwrap();
        let v = view(&app);
        assert_eq!(v.stats_cols, StatsColumn::shown_with(true, true));
        let at = |c| v.stats_cols.iter().position(|&x| x == c).unwrap();
        assert_eq!(at(StatsColumn::DoraFro), at(StatsColumn::Fro) + 1);
        assert_eq!(at(StatsColumn::DoraRelative), at(StatsColumn::Relative) + 1);
        let st = app.stats_of(0).unwrap();
        let base = app.jobs.base(0, false).map(|b| &**b);
        let num = lorascope::view::text::num;
        for &r in &v.stats_rows {
            let model::StatsRow::Delta(k) = r else {
                continue;
            };
            let dora = want.deltas[st.deltas[k].index].dora.clone().unwrap();
            let data = model::StatsData::new(st, base);
            assert_eq!(data.cell(r, StatsColumn::DoraFro), num(dora.fro_norm));
            assert_eq!(
                data.cell(r, StatsColumn::DoraRelative),
                num(dora.relative_change.unwrap())
            );
        }
        let screen = screen_text(&draw(&mut app, 160, H));
        assert!(
            screen.contains("DORA ‖ΔW‖_F") && screen.contains("DORA REL."),
            "{screen}"
        );
    }

    #[test]
    fn snapshot_stats_streaming() {
        let (_t, mut app) = app(true);
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        let (job, adapter, id, dir) = own_stats_then_base(&mut app);
        let (parts, _) = streamed(&adapter, &id, &dir);
        app.update(Action::Partial {
            job,
            output: parts[1].clone().into(),
        });
        app.update(Action::Progress {
            job,
            done: 6,
            total: 12,
        });
        insta::assert_snapshot!("stats_streaming", snap(&mut app).backend());
    }

    #[test]
    fn snapshot_expert_map_streaming() {
        let (_t, mut app) = app(true);
        app.color = false;
        cmds(&mut app, &[Command::Open, Command::View(2)]);
        let (job, adapter, id, dir) = own_stats_then_base(&mut app);
        let (parts, _) = streamed(&adapter, &id, &dir);
        app.update(Action::Partial {
            job,
            output: parts[1].clone().into(),
        });
        while view(&app).metric != Metric::Amplification {
            cmd(&mut app, Command::NextMetric);
        }
        cmd(&mut app, Command::Down);
        insta::assert_snapshot!("expert_map_streaming", snap(&mut app).backend());
    }

    #[test]
    fn snapshot_merged_layer_map_and_stats() {
        let (_t, mut app) = merged_app(true);
        app.color = false;
        cmds(&mut app, &[Command::Open, Command::View(1)]);
        run_effects(&mut app);
        cmds(&mut app, &[Command::Down, Command::Right, Command::Right]);
        insta::assert_snapshot!("merged_layer_map", snap(&mut app).backend());
        cmd(&mut app, Command::View(3));
        // The largest changes first.
        cmds(&mut app, &[Command::SortNext; 5]);
        cmds(&mut app, &[Command::SortReverse, Command::Top]);
        insta::assert_snapshot!("merged_stats", snap(&mut app).backend());
    }

    #[test]
    fn snapshot_stats_dora() {
        let (_t, mut app, ..) = dora_app();
        cmds(&mut app, &[Command::Open, Command::View(3)]);
        run_effects(&mut app);
        insta::assert_snapshot!("stats_dora", snap(&mut app).backend());
    }
}

/// Rows arrive one at a time: a full model listed before the adapter that names it becomes a
/// `base model` row when that adapter arrives (its count in the row and the detail line).
#[test]
fn a_base_model_row_counts_the_adapters_that_arrive_after_it() {
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let dims = Dims {
        layers: 1,
        ..Dims::TOY_MXFP4
    };
    write_base(root, "a/base", &BaseSpec::new(dims, ExpertStorage::Mxfp4)).unwrap();
    for (i, id) in ["b/lora-1", "c/lora-2"].into_iter().enumerate() {
        let mut s = Spec::new(dims, Pattern::Attention);
        s.base_model = "a/base".into();
        s.seed = i as u64;
        synth::write_hub_repo(
            root,
            id,
            &[synth::Item::Adapter {
                sub: String::new(),
                spec: s,
            }],
        )
        .unwrap();
    }
    let src = discovery::discover_cache(root);
    let mut app = App::new(Options {
        color: false,
        export_dir: PathBuf::from("."),
        scanning: "scanning".into(),
    });
    let mut seen = vec![];
    discovery::load_each(&src, LayoutOptions::default(), 1, |a| {
        assert_eq!(a.base_of, 0, "one adapter knows no list");
        app.update(Action::ScanRows { adapters: vec![a] });
        seen.push(app.list.rows[0].cell(ListColumn::Pattern));
    });
    assert_eq!(
        seen,
        ["full-weights", "base model (1)", "base model (2)"],
        "{:?}",
        app.list.rows[0].detail
    );
    assert!(app.list.rows[0]
        .detail
        .iter()
        .any(|l| l.contains("the base of 2 adapters in the list")));
}

// ---------------------------------------------------------------------------------------------
// The Hub source (`H`): the same list over the Hub's adapters of a base model, headers only
// until `F` fetches one; against the loopback Hub-like server, with the event loop's own runner.

#[allow(dead_code)]
#[path = "support/server.rs"]
mod server;

mod hub_source {
    use super::*;
    use lorascope::hub::HubConfig;
    use lorascope::tui::app::{ScanState, Source};
    use lorascope::view::grid::{self, CellKind};
    use server::{HubServer, ServedFile, ServedRepo};
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    /// The Hub's side: a PEFT expert adapter (the layer map has expert cells) and an
    /// attention-only one, listed as adapters of gpt-oss-20b, with their downloads.
    fn served() -> (Vec<ServedRepo>, Vec<Vec<ServedFile>>) {
        let moe = spec(
            Pattern::PeftExperts {
                layers: vec![0, 7, 15, 23],
            },
            8,
            4,
            Dtype::BF16,
            11,
        );
        let attn = spec(Pattern::Attention, 4, 0, Dtype::F32, 12);
        let files = |s: &Spec| {
            let g = synth::generate(s);
            vec![
                ServedFile::bytes(
                    "adapter_model.safetensors",
                    synth::safetensors_bytes(&g.tensors, true),
                ),
                ServedFile::bytes(
                    "adapter_config.json",
                    serde_json::to_vec_pretty(&g.config).unwrap(),
                ),
            ]
        };
        let (fm, fa) = (files(&moe), files(&attn));
        let mut a = ServedRepo::new("hubco/moe-peft", fm.clone()).with_base("openai/gpt-oss-20b");
        a.downloads = 4321;
        let mut b = ServedRepo::new("hubco/attn", fa.clone()).with_base("openai/gpt-oss-20b");
        b.downloads = 7;
        (vec![a, b], vec![fm, fa])
    }

    /// The same files on disk, loaded as a local adapter: what the Hub rows must match.
    fn local_twin(dir: &Path, files: &[ServedFile]) -> Adapter {
        for f in files {
            let server::Body::Bytes(b) = &f.body else {
                unreachable!("served from memory")
            };
            std::fs::write(dir.join(&f.name), b.as_slice()).unwrap();
        }
        let src = discovery::discover_path(dir).remove(0);
        Adapter::load(&src, LayoutOptions::default())
    }

    /// The explorer's event loop without a terminal: the real runner (Hub settings given, not
    /// read from the environment), its actions fed back into the app.
    struct Driver {
        rt: tokio::runtime::Runtime,
        runner: event::Runner,
        rx: UnboundedReceiver<Action>,
    }

    impl Driver {
        fn new(cfg: HubConfig, headers: &Path) -> Driver {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (tx, rx) = unbounded_channel();
            let runner = event::Runner::with_hub(tx, cfg, Some(headers.to_path_buf()));
            Driver { rt, runner, rx }
        }

        /// Runs the queued work and feeds its actions to the app until `done` holds.
        fn until(&mut self, app: &mut App, what: &str, done: impl Fn(&App) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                {
                    let _rt = self.rt.enter();
                    for e in app.take_effects() {
                        self.runner.run(e, app);
                    }
                }
                if done(app) {
                    return;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let rx = &mut self.rx;
                match self
                    .rt
                    .block_on(async { tokio::time::timeout(left, rx.recv()).await })
                {
                    Ok(Some(a)) => app.update(a),
                    _ => panic!("timed out waiting for {what}; status {:?}", app.status),
                }
            }
        }
    }

    struct Setup {
        server: HubServer,
        files: Vec<Vec<ServedFile>>,
        dir: tempfile::TempDir,
        _fixtures: tempfile::TempDir,
        app: App,
        driver: Driver,
    }

    /// The local fixtures' list, a Hub with two adapters, and a hub cache to fetch into.
    fn setup(cfg: impl FnOnce(&HubServer) -> HubConfig) -> Setup {
        let (repos, files) = served();
        let server = HubServer::start(repos);
        let (fixtures, mut app) = new_app(false);
        let dir = tempfile::tempdir().unwrap();
        app.fetch_cache = Some(dir.path().join("hub"));
        let driver = Driver::new(cfg(&server), &dir.path().join("headers"));
        Setup {
            server,
            files,
            dir,
            _fixtures: fixtures,
            app,
            driver,
        }
    }

    /// Every file under `root` (none when it does not exist).
    fn files_in(root: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    fn ids(app: &App) -> Vec<String> {
        app.adapters.iter().map(|a| a.id.clone()).collect()
    }

    fn selected_id(app: &App) -> String {
        app.adapters[app.selected_adapter().unwrap()].id.clone()
    }

    /// `H`, then the discovery until it ends.
    fn to_hub(s: &mut Setup) {
        cmd(&mut s.app, Command::Source);
        s.driver.until(&mut s.app, "the Hub list", |a| {
            a.source.is_hub() && !matches!(a.scan, ScanState::Scanning { .. })
        });
    }

    #[test]
    fn h_switches_sources_and_each_keeps_its_rows_selection_and_marks() {
        let mut s = setup(server::config);
        let local_ids = ids(&s.app);
        select(&mut s.app, "fixtures/moe-peft");
        cmd(&mut s.app, Command::Mark);
        // H, and back at once: the discovery goes on for the Hub list, not the one shown.
        cmd(&mut s.app, Command::Source);
        assert!(matches!(
            s.app.take_effects().as_slice(),
            [Effect::Discover { base, .. }] if base == "openai/gpt-oss-20b"
        ));
        cmd(&mut s.app, Command::Source);
        assert_eq!(s.app.source, Source::Local);
        // (The effect was taken above: run the discovery as the loop would.)
        {
            let _rt = s.driver.rt.enter();
            let job = s.app.parked.as_ref().unwrap().jobs.discovery().unwrap().0;
            s.driver.runner.run(
                Effect::Discover {
                    job,
                    base: "openai/gpt-oss-20b".into(),
                },
                &mut s.app,
            );
        }
        s.driver.until(&mut s.app, "the parked discovery", |a| {
            a.parked.as_ref().unwrap().scan == ScanState::Done
        });
        assert_eq!(ids(&s.app), local_ids, "Hub rows landed on the local list");
        assert_eq!(selected_id(&s.app), "fixtures/moe-peft");
        // The Hub list, as it was filled while parked: no second discovery.
        cmd(&mut s.app, Command::Source);
        assert!(s.app.take_effects().is_empty(), "the Hub was listed again");
        assert_eq!(
            s.app.source,
            Source::Hub {
                base: "openai/gpt-oss-20b".into()
            }
        );
        let mut hub_ids = ids(&s.app);
        hub_ids.sort();
        assert_eq!(hub_ids, ["hubco/attn", "hubco/moe-peft"]);
        assert!(s.app.remote.iter().all(|&r| r));
        assert_eq!(s.app.list.columns.last(), Some(&ListColumn::Downloads));
        let downloads: Vec<String> = s
            .app
            .list
            .rows
            .iter()
            .map(|r| r.cell(ListColumn::Downloads))
            .collect();
        let expect: Vec<&str> = s
            .app
            .adapters
            .iter()
            .map(|a| {
                if a.id == "hubco/moe-peft" {
                    "4321"
                } else {
                    "7"
                }
            })
            .collect();
        assert_eq!(downloads, expect);
        select(&mut s.app, "hubco/attn");
        let text = screen_text(&draw(&mut s.app, W, H));
        assert!(
            text.contains("Hub (base model openai/gpt-oss-20b)"),
            "{text}"
        );
        assert!(
            text.contains("DOWNLOADS") && text.contains("4321"),
            "{text}"
        );
        // Back and forth: each list as it was left.
        cmd(&mut s.app, Command::Source);
        assert_eq!(
            (ids(&s.app), selected_id(&s.app)),
            (local_ids.clone(), "fixtures/moe-peft".to_string())
        );
        assert_eq!(s.app.list.marked.len(), 1);
        assert!(!screen_text(&draw(&mut s.app, W, H)).contains("DOWNLOADS"));
        cmd(&mut s.app, Command::Source);
        assert_eq!(selected_id(&s.app), "hubco/attn");
        assert!(s.app.list.marked.is_empty());
    }

    #[test]
    fn a_hub_adapters_tree_and_maps_come_from_its_headers_alone() {
        let mut s = setup(server::config);
        to_hub(&mut s);
        select(&mut s.app, "hubco/moe-peft");
        cmd(&mut s.app, Command::Open);
        let twin_dir = tempfile::tempdir().unwrap();
        let twin = local_twin(twin_dir.path(), &s.files[0]);
        let Screen::Adapter(v) = &s.app.screen else {
            panic!("Enter did not open the adapter");
        };
        assert_eq!(v.tree.len(), lorascope::tui::model::build_tree(&twin).len());
        cmd(&mut s.app, Command::View(1));
        // No statistics job on data that is not here: the status bar offers to fetch it.
        assert!(s.app.take_effects().is_empty());
        assert!(
            s.app
                .status
                .as_deref()
                .unwrap_or("")
                .contains("F fetches it"),
            "{:?}",
            s.app.status
        );
        let Screen::Adapter(v) = &s.app.screen else {
            unreachable!()
        };
        let want = grid::layer_grid(&twin, None, None);
        let kinds = |g: &Grid| -> Vec<(String, CellKind)> {
            (0..g.rows.len())
                .flat_map(|r| (0..g.cols.len()).map(move |c| (r, c)))
                .map(|(r, c)| {
                    (
                        g.cell(r, c).map_or(String::new(), |x| x.text.clone()),
                        g.kind(r, c, 0),
                    )
                })
                .collect()
        };
        assert_eq!(v.layers.rows, want.rows);
        assert_eq!(kinds(&v.layers), kinds(&want));
        assert!(
            kinds(&want).iter().any(|(t, _)| t.contains('×')),
            "expert cells"
        );
        cmd(&mut s.app, Command::View(2));
        let Screen::Adapter(v) = &s.app.screen else {
            unreachable!()
        };
        let target = &grid::expert_targets(&twin)[0];
        assert_eq!(
            kinds(&v.experts),
            kinds(&grid::expert_grid(&twin, target, None, None))
        );
        let text = screen_text(&draw(&mut s.app, W, H));
        assert!(text.contains("headers only: F fetches it"), "{text}");
        // Only headers crossed the wire: 8 bytes and the header.
        let server::Body::Bytes(b) = &s.files[0][0].body else {
            unreachable!()
        };
        let header = 8 + u64::from_le_bytes(b[..8].try_into().unwrap());
        let config = s.files[0][1].size;
        let read = s.server.body_bytes_for("hubco/moe-peft/resolve");
        assert_eq!(read, header + config, "of {}", b.len());
    }

    /// Opens hubco/moe-peft on the Stats view and presses F.
    fn fetch_moe(s: &mut Setup) {
        select(&mut s.app, "hubco/moe-peft");
        cmds(&mut s.app, &[Command::Open, Command::View(3)]);
        assert!(s.app.take_effects().is_empty());
        cmd(&mut s.app, Command::FetchThis);
    }

    fn moe_idx(app: &App) -> usize {
        app.adapters
            .iter()
            .position(|a| a.id == "hubco/moe-peft")
            .unwrap()
    }

    #[test]
    fn f_fetches_a_hub_adapter_and_its_statistics_then_compute_as_for_a_local_one() {
        let mut s = setup(server::config);
        to_hub(&mut s);
        fetch_moe(&mut s);
        assert!(s
            .app
            .fetch()
            .is_some_and(|f| f.repo.starts_with("hubco/moe-peft@")));
        let i = moe_idx(&s.app);
        s.driver
            .until(&mut s.app, "the fetch and the statistics", |a| {
                a.stats_of(i).is_some()
            });
        assert!(!s.app.remote[i], "the row's data is local now");
        // Still on its Stats view, now computed from the fetched files.
        let Screen::Adapter(v) = &s.app.screen else {
            panic!("the view was left");
        };
        assert_eq!((v.idx, v.tab), (i, Tab::Stats));
        let twin_dir = tempfile::tempdir().unwrap();
        let twin = local_twin(twin_dir.path(), &s.files[0]);
        let want = stats::compute(&twin, &Filter::default(), &Control::default()).unwrap();
        let got = s.app.stats_of(i).unwrap();
        let norms = |st: &stats::AdapterStats| -> Vec<f64> {
            st.deltas.iter().map(|d| d.fro_norm).collect()
        };
        assert_eq!(norms(got), norms(&want));
        assert!(s.app.adapters[i].path.starts_with(s.dir.path()));
        // The Hub row keeps its downloads.
        assert_eq!(s.app.list.rows[i].cell(ListColumn::Downloads), "4321");
    }

    #[test]
    fn esc_cancels_a_hub_fetch_leaving_nothing_partial_in_the_cache() {
        let mut s = setup(server::config);
        to_hub(&mut s);
        // The download stops after 64 KiB and hangs there.
        s.server.faults().stall = Some(("adapter_model.safetensors".into(), 64 << 10));
        fetch_moe(&mut s);
        s.driver.until(&mut s.app, "some bytes of the fetch", |a| {
            a.fetch().is_some_and(|f| f.done > 0)
        });
        cmd(&mut s.app, Command::Escape);
        assert!(s.app.fetch().is_none());
        assert!(
            s.app.status.as_deref().unwrap_or("").contains("cancelled"),
            "{:?}",
            s.app.status
        );
        assert!(
            matches!(&s.app.screen, Screen::Adapter(_)),
            "Esc stopped the fetch only"
        );
        let cancel = s.app.take_effects();
        assert!(matches!(cancel.as_slice(), [Effect::Cancel(_)]));
        let cache = s.dir.path().join("hub");
        let repo = cache.join("models--hubco--moe-peft");
        assert!(repo.join("blobs").exists(), "the fetch had started writing");
        {
            let _rt = s.driver.rt.enter();
            for e in cancel {
                s.driver.runner.run(e, &mut s.app);
            }
        }
        // The aborted fetch takes back what it wrote (in the background, at once).
        let deadline = Instant::now() + Duration::from_secs(10);
        while repo.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only the blob's empty lock file stays, as huggingface_hub leaves its `.locks`.
        let locks = cache.join(".locks");
        let left: Vec<_> = files_in(&cache)
            .into_iter()
            .filter(|f| !f.starts_with(&locks) || std::fs::metadata(f).unwrap().len() > 0)
            .collect();
        assert!(left.is_empty(), "left in the cache: {left:?}");
        assert!(discovery::discover_cache(&cache).is_empty());
        let i = moe_idx(&s.app);
        assert!(s.app.remote[i]);
        // Fetched again without the fault: it completes and computes.
        s.server.faults().stall = None;
        cmd(&mut s.app, Command::FetchThis);
        s.driver
            .until(&mut s.app, "the second fetch", |a| a.stats_of(i).is_some());
        assert_eq!(discovery::discover_cache(&cache).len(), 1);
    }

    #[test]
    fn offline_the_hub_source_says_so_in_one_line_and_the_local_list_works() {
        for (cfg, says) in [
            (
                Box::new(|srv: &HubServer| HubConfig {
                    offline: true,
                    ..server::config(srv)
                }) as Box<dyn Fn(&HubServer) -> HubConfig>,
                "Hub offline: HF_HUB_OFFLINE is set",
            ),
            (
                Box::new(|srv: &HubServer| HubConfig {
                    // A port nothing listens on.
                    endpoint: "http://127.0.0.1:9".into(),
                    ..server::config(srv)
                }),
                "Hub offline: http://127.0.0.1:9 cannot be reached",
            ),
        ] {
            let mut s = setup(cfg);
            to_hub(&mut s);
            assert!(s.app.adapters.is_empty());
            let text = screen_text(&draw(&mut s.app, W, H));
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(says)).collect();
            assert_eq!(lines.len(), 1, "{text}");
            assert!(lines[0].contains("H shows the local adapters"), "{text}");
            assert_eq!(s.server.requests_for("/api/models"), 0);
            // The local list works as before: open an adapter and compute its statistics.
            cmd(&mut s.app, Command::Source);
            assert_eq!(s.app.adapters.len(), 7);
            select(&mut s.app, "fixtures/attn-r8");
            cmds(&mut s.app, &[Command::Open, Command::View(3)]);
            run_effects(&mut s.app);
            let i = s.app.selected_adapter().unwrap();
            assert!(s.app.stats_of(i).is_some());
        }
    }
}
