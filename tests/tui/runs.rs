//! Training runs in the explorer (issue 26): a run is one list row that expands to its
//! checkpoints, and its Run screen shows the timeline as it is read, opens a step's checkpoint
//! and compares two marked steps.

use super::*;
use lorascope::run::Loaded;
use lorascope::synth::run::{write_run, Naming, RunSpec, Select};
use lorascope::tui::screen::list::Row;
use lorascope::tui::screen::run::Focus;
use lorascope::tui::screen::RunScreen;

/// The run's folder under the fixtures' root.
const RUN: &str = "demo-run";

/// A Trainer run of 5 checkpoints (steps 100–500) of a PEFT adapter with experts on layers 0, 7,
/// 15 and 23: expert 1 of layer 7's gate_up_proj wakes at step 300, expert 2 never moves, and
/// checkpoint-400's file is cut short (unreadable). Its adapters are loaded as `load` does:
/// ids `fixtures/demo-run/checkpoint-N`, paths under `/cache`.
fn run_fixture(root: &Path) -> Vec<Adapter> {
    let spec = spec(
        Pattern::PeftExperts {
            layers: vec![0, 7, 15, 23],
        },
        8,
        4,
        Dtype::F32,
        11,
    );
    let mut r = RunSpec::new(spec, vec![100, 200, 300, 400, 500], Naming::Trainer);
    let expert = |e| Select {
        layer: Some(7),
        target: Some("gate_up_proj"),
        expert: Some(e),
    };
    r.wake.push((expert(1), 300));
    r.frozen.push(expert(2));
    let dir = root.join(RUN);
    write_run(&dir, &r).unwrap();
    let f = dir.join("checkpoint-400/adapter_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    r.steps
        .iter()
        .map(|s| load(root, &format!("{RUN}/checkpoint-{s}")))
        .collect()
}

/// The fixtures' list with the run's checkpoints in it (arriving in the walk's order).
fn run_app(color: bool) -> (tempfile::TempDir, App) {
    let (dir, mut adapters) = fixtures();
    adapters.extend(run_fixture(dir.path()));
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

/// Runs the queued work, the timeline reading the run where it is on disk (the list shows it
/// under `/cache`, as every fixture).
fn run_work(app: &mut App, root: &Path) {
    run_effects_with(app, &|l: &mut Loaded| real_paths(l, root));
}

fn real_paths(l: &mut Loaded, root: &Path) {
    let real = |p: &Path| root.join(p.strip_prefix("/cache").unwrap_or(p));
    l.run.path = real(&l.run.path);
    for a in &mut l.adapters {
        a.path = real(&a.path);
    }
}

/// Selects the run's row.
fn select_run(app: &mut App) {
    cmd(app, Command::Top);
    for _ in 0..app.list.visible.len() {
        if app.list.selected_run().is_some() {
            return;
        }
        cmd(app, Command::Down);
    }
    panic!("no run row");
}

fn run_screen(app: &App) -> &RunScreen {
    match &app.screen {
        Screen::Run(v) => v,
        _ => panic!("not on the Run screen"),
    }
}

/// The ids of the rows shown, as the list shows them (without its org).
fn id_cells(app: &App) -> Vec<String> {
    let l = &app.list;
    (0..l.visible.len())
        .map(|i| {
            let last = !matches!(l.visible.get(i + 1), Some(Row::Checkpoint(..)));
            l.id_cell(l.visible[i], last)
        })
        .collect()
}

#[test]
fn a_run_is_one_row_that_expands_to_its_checkpoints() {
    let (_d, mut app) = run_app(true);
    assert_eq!(app.list.runs.len(), 1);
    let run = &app.list.runs[0];
    assert_eq!(run.run.id, "fixtures/demo-run");
    assert_eq!(run.row.cell(ListColumn::Pattern), "run 5 ckpts 100–500");
    // Seven adapters and the run; its checkpoints are folded into it.
    assert_eq!(app.list.visible.len(), 8);
    assert_eq!(
        id_cells(&app),
        [
            "attn-r8",
            "corrupt",
            "▸ demo-run",
            "empty",
            "moe-peft",
            "qv-r8",
            "router",
            "tinker-3d"
        ]
    );
    assert!(title_line(&mut app).contains(" 7 adapters · 1 run"));
    select_run(&mut app);
    assert_eq!(app.selected_adapter(), None, "a run is not one adapter");
    // l opens it: its checkpoints under it, in step order; h on one folds them again.
    cmd(&mut app, Command::Expand);
    let cells = id_cells(&app);
    assert_eq!(
        cells[2..8],
        [
            "▾ demo-run",
            "  ├ checkpoint-100",
            "  ├ checkpoint-200",
            "  ├ checkpoint-300",
            "  ├ checkpoint-400",
            "  └ checkpoint-500"
        ]
    );
    assert_eq!(app.list.selected_run(), Some(0), "the run stays selected");
    cmds(&mut app, &[Command::Down, Command::Down]);
    let second = app.selected_adapter().expect("a checkpoint is an adapter");
    assert_eq!(app.adapters[second].id, "fixtures/demo-run/checkpoint-200");
    // Sorting keeps the checkpoints under their run, in step order.
    cmd(&mut app, Command::SortReverse);
    let cells = id_cells(&app);
    let at = cells.iter().position(|c| c == "▾ demo-run").unwrap();
    assert_eq!(cells[at + 1], "  ├ checkpoint-100");
    assert_eq!(cells[0], "tinker-3d");
    assert_eq!(app.selected_adapter(), Some(second), "the selection stays");
    cmd(&mut app, Command::Collapse);
    assert_eq!(
        app.list.selected_run(),
        Some(0),
        "h on a checkpoint selects its run"
    );
    assert_eq!(app.list.visible.len(), 8);
    // A filter that names a checkpoint shows its run, and under it (opened) that checkpoint.
    cmd(&mut app, Command::Filter);
    for ch in "checkpoint-300".chars() {
        app.update(Action::Input(ch));
    }
    cmd(&mut app, Command::FilterKeep);
    assert_eq!(id_cells(&app), ["▸ demo-run"]);
    cmd(&mut app, Command::Expand);
    assert_eq!(id_cells(&app), ["▾ demo-run", "  └ checkpoint-300"]);
    // Enter on the run opens its Run screen; on a checkpoint, that adapter.
    cmd(&mut app, Command::Down);
    cmd(&mut app, Command::Open);
    assert!(
        matches!(&app.screen, Screen::Adapter(v) if app.adapters[v.idx].id.ends_with("checkpoint-300"))
    );
    cmd(&mut app, Command::Back);
    cmd(&mut app, Command::Up);
    cmd(&mut app, Command::Open);
    assert_eq!(run_screen(&app).run.id, "fixtures/demo-run");
}

#[test]
fn the_list_keys_expand_and_collapse_runs() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let list = [keymap::Mode::List, keymap::Mode::Move, keymap::Mode::Global];
    let key = |c| keymap::lookup(&list, &KeyEvent::new(c, KeyModifiers::NONE));
    assert_eq!(key(KeyCode::Char('l')), Some(Command::Expand));
    assert_eq!(key(KeyCode::Right), Some(Command::Expand));
    assert_eq!(key(KeyCode::Char('h')), Some(Command::Collapse));
    assert_eq!(key(KeyCode::Left), Some(Command::Collapse));
    // The list's other keys keep their meaning.
    assert_eq!(key(KeyCode::Char(' ')), Some(Command::Mark));
    assert_eq!(key(KeyCode::Char('m')), Some(Command::Mark));
    assert_eq!(key(KeyCode::Enter), Some(Command::Open));
    let run = [keymap::Mode::Run, keymap::Mode::Move, keymap::Mode::Global];
    let key = |c| keymap::lookup(&run, &KeyEvent::new(c, KeyModifiers::NONE));
    assert_eq!(key(KeyCode::Char('m')), Some(Command::NextMetric));
    assert_eq!(key(KeyCode::Char(' ')), Some(Command::Mark));
    assert_eq!(key(KeyCode::Char('c')), Some(Command::Compare));
    assert_eq!(key(KeyCode::Enter), Some(Command::Open));
    assert_eq!(key(KeyCode::Char('p')), Some(Command::ExportPlot));
    assert_eq!(key(KeyCode::Char('q')), Some(Command::Back));
    assert_eq!(key(KeyCode::Esc), Some(Command::Escape));
}

#[test]
fn marks_and_export_on_a_run_row_say_what_to_do_instead() {
    let (_d, mut app) = run_app(true);
    select_run(&mut app);
    cmd(&mut app, Command::Mark);
    assert!(app.list.marked.is_empty());
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("mark two checkpoints"));
    cmd(&mut app, Command::Export);
    assert!(app.export.is_none());
    assert!(app.status.as_deref().unwrap().contains("pick a checkpoint"));
    // Checkpoints mark like adapters; a folded run shows its checkpoint's mark.
    cmds(&mut app, &[Command::Expand, Command::Down, Command::Mark]);
    assert_eq!(app.list.marked.len(), 1);
    cmd(&mut app, Command::Collapse);
    let screen = screen_text(&draw(&mut app, W, H));
    assert!(screen.contains("A ▸ demo-run"), "{screen}");
}

/// The Run screen of the fixture's run, its timeline read to the end.
fn opened(color: bool) -> (tempfile::TempDir, App) {
    let (d, mut app) = run_app(color);
    select_run(&mut app);
    cmd(&mut app, Command::Open);
    run_work(&mut app, d.path());
    (d, app)
}

#[test]
fn the_timeline_fills_in_a_checkpoint_at_a_time() {
    let (d, mut app) = run_app(true);
    select_run(&mut app);
    cmd(&mut app, Command::Open);
    let key = run_screen(&app).key();
    assert!(matches!(app.jobs.get(&key), Some(Job::Running { .. })));
    // The job's first messages: nothing measured, then the last checkpoint (measured first).
    let Some(Effect::Timeline { job, mut loaded }) = app.take_effects().pop() else {
        panic!("the Run screen starts its timeline");
    };
    real_paths(&mut loaded, d.path());
    let mut b = lorascope::run::timeline::Builder::new(*loaded, None);
    let publish = |app: &mut App, b: &lorascope::run::timeline::Builder| {
        let out = lorascope::tui::jobs::RunOutput {
            timeline: b.timeline(&Filter::default()),
            loss: vec![],
        };
        app.update(Action::Progress {
            job,
            done: b.done(),
            total: b.total(),
        });
        app.update(Action::Partial {
            job,
            output: out.into(),
        });
    };
    publish(&mut app, &b);
    let v = run_screen(&app);
    assert_eq!(v.maps.layers.cols.len(), 5);
    let pending = |v: &RunScreen, c: usize| v.maps.layers.cell(0, c).is_some_and(|x| x.pending[0]);
    assert!((0..5).filter(|&c| c != 3).all(|c| pending(v, c)));
    assert!(
        v.maps.layers.cell(0, 3).is_none(),
        "checkpoint-400 is unreadable"
    );
    assert!(b.step(&Control::default()).unwrap());
    publish(&mut app, &b);
    let v = run_screen(&app);
    assert!(!pending(v, 4), "the last step is read first");
    assert!(v.maps.layers.cell(0, 4).unwrap().values[0].is_some());
    assert!(pending(v, 0));
    assert!(title_line(&mut app).contains("timeline 1/4 checkpoints"));
    // Esc cancels and keeps what was read; reopening starts it again.
    cmd(&mut app, Command::Escape);
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("cancelled after 1 of 4"));
    assert!(matches!(app.screen, Screen::Run(_)));
    assert!(!pending(run_screen(&app), 4));
    assert!(title_line(&mut app).contains("timeline cancelled"));
    cmd(&mut app, Command::Escape);
    assert!(matches!(app.screen, Screen::List));
    let _ = app.take_effects();
    cmd(&mut app, Command::Open);
    assert!(matches!(app.jobs.get(&key), Some(Job::Running { .. })));
}

#[test]
fn the_maps_show_the_timelines_values() {
    let (d, app) = opened(true);
    let v = run_screen(&app);
    let data = v.data.clone().expect("the timeline was read");
    let tl = &data.timeline;
    assert!(
        tl.checkpoints[3].error.is_some(),
        "checkpoint-400 is unreadable"
    );
    // The loss curve is the trainer's log: every 50 steps up to 500.
    assert_eq!(data.loss.len(), 10);
    assert_eq!(data.loss[0].0, 50);
    // The layer map gathers the layer's deltas as view::timeline does; the cursor starts on
    // the last step, at layer 0, whose expert map is gate_up_proj's.
    assert_eq!(v.cursor, (0, 4));
    let fro: f64 = tl
        .deltas
        .iter()
        .filter(|x| x.layer == Some(0))
        .map(|x| x.steps[4].fro_norm.unwrap().powi(2))
        .sum::<f64>()
        .sqrt();
    let cell = v.maps.layers.cell(0, 4).unwrap().values[0].unwrap();
    assert!((cell - fro).abs() < 1e-9 * fro.max(1.0), "{cell} vs {fro}");
    let (t, g) = v.maps.experts.as_ref().expect("layer 0 has experts");
    assert_eq!(t.as_str(), "gate_up_proj");
    assert_eq!(g.rows.len(), 32);
    drop(d);
}

#[test]
fn enter_on_a_step_opens_its_checkpoint_and_q_comes_back() {
    let (_d, mut app) = opened(true);
    cmds(&mut app, &[Command::Left, Command::Left, Command::Left]);
    assert_eq!(run_screen(&app).cursor.1, 1);
    cmd(&mut app, Command::Open);
    let Screen::Adapter(v) = &app.screen else {
        panic!("Enter opens the checkpoint");
    };
    assert_eq!(app.adapters[v.idx].id, "fixtures/demo-run/checkpoint-200");
    cmd(&mut app, Command::Back);
    assert_eq!(
        run_screen(&app).cursor.1,
        1,
        "back on the Run screen as it was"
    );
    cmd(&mut app, Command::Back);
    assert!(matches!(app.screen, Screen::List));
    assert_eq!(app.list.selected_run(), Some(0));
}

#[test]
fn two_marked_steps_open_the_compare_screen_on_their_checkpoints() {
    let (d, mut app) = opened(true);
    cmd(&mut app, Command::Mark);
    cmds(&mut app, &[Command::Top, Command::Left, Command::Left]);
    cmd(&mut app, Command::Compare);
    assert!(app.status.as_deref().unwrap().contains("mark two steps"));
    cmd(&mut app, Command::Mark);
    assert_eq!(run_screen(&app).marked, vec![4, 2]);
    cmd(&mut app, Command::Compare);
    let Screen::Compare(c) = &app.screen else {
        panic!("c compares the two marked steps");
    };
    let ids = (app.adapters[c.a].id.clone(), app.adapters[c.b].id.clone());
    assert_eq!(
        ids,
        (
            "fixtures/demo-run/checkpoint-300".to_string(),
            "fixtures/demo-run/checkpoint-500".to_string()
        ),
        "the earlier step is A"
    );
    run_work(&mut app, d.path());
    assert!(app.current_comparison().is_some());
    cmd(&mut app, Command::Escape);
    assert_eq!(run_screen(&app).marked, vec![4, 2], "back with its marks");
}

#[test]
fn m_cycles_the_metrics_t_the_targets_and_tab_the_maps() {
    let (_d, mut app) = opened(true);
    let mut seen = vec![run_screen(&app).metric];
    for _ in 0..7 {
        cmd(&mut app, Command::NextMetric);
        seen.push(run_screen(&app).metric);
    }
    assert_eq!(
        seen.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        [
            "fro",
            "growth",
            "spectral",
            "erank",
            "e99",
            "similarity",
            "similarity-last",
            "fro"
        ]
    );
    let targets: Vec<String> = (0..8)
        .map(|_| {
            let t = run_screen(&app)
                .target()
                .map_or("all".into(), |t| t.to_string());
            cmd(&mut app, Command::NextTarget);
            t
        })
        .collect();
    assert_eq!(
        targets,
        [
            "all",
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_up_proj",
            "down_proj",
            "all"
        ]
    );
    // The expert map follows an expert target; Tab moves the keys to it.
    for _ in 0..5 {
        cmd(&mut app, Command::NextTarget);
    }
    let v = run_screen(&app);
    assert_eq!(v.target().unwrap().as_str(), "down_proj");
    assert_eq!(v.maps.experts.as_ref().unwrap().0.as_str(), "down_proj");
    cmd(&mut app, Command::NextView);
    assert_eq!(run_screen(&app).focus, Focus::Experts);
    cmd(&mut app, Command::Down);
    assert_eq!(run_screen(&app).expert_row, 1);
    // A layer without experts has no expert map, and the keys go back to the layer map.
    cmds(
        &mut app,
        &[Command::NextTarget, Command::NextView, Command::Down],
    );
    assert_eq!(run_screen(&app).focus, Focus::Layers);
    assert_eq!(run_screen(&app).cursor.0, 1);
    let v = run_screen(&app);
    assert!(v.maps.experts.is_none(), "layer 1 has no expert LoRA");
    let screen = screen_text(&draw(&mut app, W, 40));
    assert!(screen.contains("no expert LoRA at this layer"), "{screen}");
}

#[test]
fn an_unreadable_checkpoint_says_why_on_its_step() {
    let (_d, mut app) = opened(false);
    cmd(&mut app, Command::Left);
    let screen = screen_text(&draw(&mut app, W, 40));
    assert!(screen.contains("unreadable: step 400"), "{screen}");
    assert!(screen.contains("step 400: "), "{screen}");
}

#[test]
fn no_size_makes_the_run_screens_drawing_panic() {
    let (_d, mut app) = opened(true);
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
        cmds(
            &mut app,
            &[Command::PageDown, Command::Bottom, Command::Right],
        );
        draw(&mut app, w, h);
    }
    let (_d, mut app) = run_app(true);
    select_run(&mut app);
    cmd(&mut app, Command::Expand);
    for (w, h) in [(0, 0), (1, 1), (20, 5), (80, 24)] {
        draw(&mut app, w, h);
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the list with a run (120×36, as the others), the Run screen at 120×40

fn snapshot(name: &str, t: &Terminal<TestBackend>) {
    insta::with_settings!({ snapshot_path => "../snapshots" }, {
        insta::assert_snapshot!(name, t.backend());
    });
}

#[test]
fn snapshot_list_with_a_run() {
    let (_d, mut app) = run_app(true);
    select_run(&mut app);
    snapshot("list_run", &draw(&mut app, W, H));
    cmd(&mut app, Command::Expand);
    snapshot("list_run_expanded", &draw(&mut app, W, H));
}

#[test]
fn snapshot_run_screen() {
    let (d, mut app) = run_app(false);
    select_run(&mut app);
    cmd(&mut app, Command::Open);
    // Partly read: the last step first, then the first.
    let Some(Effect::Timeline { job, mut loaded }) = app.take_effects().pop() else {
        panic!("the Run screen starts its timeline");
    };
    real_paths(&mut loaded, d.path());
    let flag = std::sync::atomic::AtomicBool::new(false);
    let mut n = 0;
    let _ = event::timeline_job(*loaded, None, &flag, &mut |done, total, out| {
        if n < 3 {
            app.update(Action::Progress { job, done, total });
            app.update(Action::Partial {
                job,
                output: out.into(),
            });
        }
        n += 1;
    });
    snapshot("run_partial", &draw(&mut app, W, 40));
    let (_d, mut app) = opened(false);
    snapshot("run", &draw(&mut app, W, 40));
}

#[test]
fn p_exports_the_map_the_keys_are_in_as_shown() {
    let (_d, mut app) = opened(true);
    let out = tempfile::tempdir().unwrap();
    app.export_dir = out.path().to_path_buf();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    // The layer map in the growth metric: the same cells and colours as on screen.
    cmd(&mut app, Command::NextMetric);
    let v = run_screen(&app).clone();
    assert_png_is_the_grid(&mut app, &v.maps.layers, Measure::Step(v.metric));
    let (path, r) = lorascope::tui::export::export_view(&app).unwrap();
    assert_eq!(name(&path), "fixtures-demo-run-timeline-growth.png");
    assert_eq!(r.cells.len(), 24 * 5);
    // The expert map once the keys are in it.
    cmd(&mut app, Command::NextView);
    let (path, r) = lorascope::tui::export::export_view(&app).unwrap();
    assert_eq!(
        name(&path),
        "fixtures-demo-run-timeline-gate_up_proj-layer0-growth.png"
    );
    assert_eq!(r.cells.len(), 32 * 5);
    let (_, g) = run_screen(&app).maps.experts.clone().unwrap();
    for (i, c) in r.cells.iter().enumerate() {
        assert_eq!(c.row, g.rows[i / 5]);
        let want = g
            .cell(i / 5, i % 5)
            .and_then(|x| x.values[v.metric.index()]);
        assert_eq!(c.value, want.filter(|x| x.is_finite()), "{c:?}");
    }
}
