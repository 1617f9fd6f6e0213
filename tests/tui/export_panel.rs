//! The export panel (`x`): settings, the export as a job, its report, its errors, Esc.

use super::*;
use lorascope::tui::export_panel::{ExportPanel, Field, Rule, State};

fn panel(app: &App) -> &ExportPanel {
    app.export.as_deref().expect("the export panel is open")
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(Action::Input(c));
    }
}

/// Moves to the panel's `field` (as a user would, with j).
fn focus(app: &mut App, field: Field) {
    for _ in 0..8 {
        if panel(app).field == field {
            return;
        }
        cmd(app, Command::Down);
    }
    panic!("no {field:?} row");
}

/// Replaces the output folder with `out`.
fn set_folder(app: &mut App, out: &Path) {
    focus(app, Field::Folder);
    for _ in 0..panel(app).folder.chars().count() {
        cmd(app, Command::FilterDelete);
    }
    type_text(app, out.to_str().unwrap());
}

/// `x` on the list row of `id`.
fn open_on(app: &mut App, id: &str) {
    select(app, id);
    cmd(app, Command::Export);
    assert_eq!(panel(app).id, id);
}

/// Snapshots go with the others (tests/snapshots), where the docs' captures are read from.
fn snapshot(name: &str, t: &Terminal<TestBackend>) {
    insta::with_settings!({ snapshot_path => "../snapshots" }, {
        insta::assert_snapshot!(name, t.backend());
    });
}

fn failure(app: &App) -> String {
    match &panel(app).state {
        State::Failed(e) => e.clone(),
        s => panic!("the export did not fail: {s:?}"),
    }
}

#[test]
fn x_is_bound_on_the_list_and_in_every_adapter_view() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let x = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE);
    let (_d, mut app) = new_app(true);
    assert_eq!(keymap::lookup(&app.modes(), &x), Some(Command::Export));
    select(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Open);
    for view in 0..Tab::ALL.len() {
        cmd(&mut app, Command::View(view));
        assert_eq!(
            keymap::lookup(&app.modes(), &x),
            Some(Command::Export),
            "{view}"
        );
    }
    // From the adapter's views, the panel opens on the adapter shown.
    cmd(&mut app, Command::Export);
    assert_eq!(panel(&app).id, "fixtures/moe-peft");
    // While it is open, `x` and `q` are nothing, not "back" or "quit"; Esc closes it.
    assert_eq!(keymap::lookup(&app.modes(), &x), None);
    cmd(&mut app, Command::Back);
    assert!(app.export.is_some() && !app.quit);
    cmd(&mut app, Command::Escape);
    assert!(app.export.is_none() && matches!(app.screen, Screen::Adapter(_)));
}

#[test]
fn the_settings_name_the_default_folder_until_one_is_typed() {
    let (_d, mut app) = new_app(true);
    app.export_dir = PathBuf::from("/plots");
    open_on(&mut app, "fixtures/moe-peft");
    assert_eq!(panel(&app).folder, "/plots/moe-peft-peft");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Right); // engine: vllm
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right); // rank K (half the largest rank, 8)
    assert_eq!(panel(&app).folder, "/plots/moe-peft-vllm-r4");
    focus(&mut app, Field::Value);
    cmd(&mut app, Command::FilterDelete);
    type_text(&mut app, "6x."); // digits only for K
    assert_eq!(panel(&app).k, "6");
    cmd(&mut app, Command::Right);
    assert_eq!(panel(&app).folder, "/plots/moe-peft-vllm-r7");
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right); // energy F
    assert_eq!(panel(&app).rule, Rule::Energy);
    assert_eq!(panel(&app).folder, "/plots/moe-peft-vllm-e0.99");
    // A folder typed stays whatever the settings.
    focus(&mut app, Field::Folder);
    type_text(&mut app, "-mine");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Left);
    assert_eq!(panel(&app).folder, "/plots/moe-peft-vllm-e0.99-mine");
    // Keep skips the K/F row.
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right);
    assert_eq!(panel(&app).rule, Rule::Keep);
    cmd(&mut app, Command::Down);
    assert_eq!(panel(&app).field, Field::Dtype);
}

#[test]
fn enter_exports_shows_the_report_and_the_written_adapter_joins_the_list() {
    let (_d, mut app) = new_app(true);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("attn-r4");
    let n = app.adapters.len();
    open_on(&mut app, "fixtures/attn-r8");
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right); // rank K = 4
    set_folder(&mut app, &out);
    cmd(&mut app, Command::ExportStart);
    assert!(matches!(panel(&app).state, State::Running));
    // While it runs, keys other than Esc change nothing.
    cmd(&mut app, Command::Left);
    assert_eq!(panel(&app).rule, Rule::Rank);
    run_effects(&mut app);
    let State::Done(done) = &panel(&app).state else {
        panic!("no report: {:?}", panel(&app).state);
    };
    let r = &done.report;
    assert_eq!((r.r, r.deltas.len(), r.verified.deltas), (4, 96, 96));
    let lines = lorascope::tui::export_panel::summary(r).join("\n");
    assert!(lines.contains("rank 8 → 4"), "{lines}");
    assert!(lines.contains("energy kept ≥ ") && lines.contains("verified: 96 deltas"));
    // Drawn in the panel.
    let text = screen_text(&draw(&mut app, W, H));
    assert!(
        text.contains("rank 8 → 4") && text.contains("wrote "),
        "{text}"
    );
    // The written adapter is listed, selected, read back at rank 4.
    assert!(out.join("adapter_model.safetensors").is_file());
    assert_eq!(app.adapters.len(), n + 1);
    let i = app.selected_adapter().unwrap();
    assert_eq!(app.adapters[i].id, out.display().to_string());
    assert!(app.adapters[i].deltas.iter().all(|d| d.rank == 4));
    assert_eq!(app.list.rows[i].attn_rank, Some(4));
    assert!(app.status.as_deref().unwrap().contains("joins the list"));
    // Enter closes; the list stays as it is.
    cmd(&mut app, Command::ExportStart);
    assert!(app.export.is_none());
    assert_eq!(app.list.visible.len(), n + 1);
}

#[test]
fn refusals_a_full_folder_and_the_cache_show_in_the_panel() {
    let (_d, mut app) = new_app(true);
    let tmp = tempfile::tempdir().unwrap();
    // vLLM does not serve gpt-oss's router LoRA: the panel lists what it refuses.
    open_on(&mut app, "fixtures/router");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Right); // vllm
    set_folder(&mut app, &tmp.path().join("router-vllm"));
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    let e = failure(&app);
    assert!(e.contains("cannot carry") && e.contains("router"), "{e}");
    assert!(!tmp.path().join("router-vllm").exists());
    let text = screen_text(&draw(&mut app, W, H));
    assert!(
        text.contains("the adapter has 48 parts the output cannot carry"),
        "{text}"
    );
    // Drop unservable: it exports, and says what it left out.
    focus(&mut app, Field::Drop);
    cmd(&mut app, Command::Right);
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    let State::Done(done) = &panel(&app).state else {
        panic!("{:?}", panel(&app).state);
    };
    assert!(!done.report.dropped.is_empty());
    let text = screen_text(&draw(&mut app, W, H));
    assert!(
        text.contains("left out (") && text.contains("--max-lora-rank"),
        "{text}"
    );
    cmd(&mut app, Command::Escape);
    // The same folder again: not empty, refused (nothing is replaced from the panel).
    open_on(&mut app, "fixtures/qv-r8");
    set_folder(&mut app, &tmp.path().join("router-vllm"));
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    assert!(
        failure(&app).contains("will not write"),
        "{}",
        failure(&app)
    );
    // Inside the hub cache in use: refused.
    let cache = tmp.path().join("hub");
    std::fs::create_dir_all(&cache).unwrap();
    app.fetch_cache = Some(cache.clone());
    set_folder(&mut app, &cache.join("models--x--y"));
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    assert!(
        failure(&app).contains("will not write"),
        "{}",
        failure(&app)
    );
    assert!(!cache.join("models--x--y").exists());
    // Settings that are not numbers never start a job.
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right);
    focus(&mut app, Field::Value);
    cmd(&mut app, Command::FilterDelete);
    cmd(&mut app, Command::ExportStart);
    assert!(failure(&app).contains("K must be"), "{}", failure(&app));
    assert!(app.take_effects().is_empty());
}

#[test]
fn esc_cancels_a_running_export_and_nothing_is_written() {
    let (_d, mut app) = new_app(true);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let n = app.adapters.len();
    open_on(&mut app, "fixtures/moe-peft");
    set_folder(&mut app, &out);
    cmd(&mut app, Command::ExportStart);
    cmd(&mut app, Command::Escape);
    assert!(matches!(panel(&app).state, State::Cancelled));
    // The job ran with its cancel flag set; its end is dropped.
    run_effects(&mut app);
    assert!(matches!(panel(&app).state, State::Cancelled));
    assert_eq!(app.adapters.len(), n);
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "left behind"
    );
    let text = screen_text(&draw(&mut app, W, H));
    assert!(text.contains("cancelled: nothing was written"), "{text}");
    // Esc again closes it.
    cmd(&mut app, Command::Escape);
    assert!(app.export.is_none());
}

#[test]
fn remote_corrupt_and_empty_adapters_say_why_they_cannot_export() {
    let (_d, mut app) = new_app(true);
    for id in ["fixtures/corrupt", "fixtures/empty"] {
        select(&mut app, id);
        cmd(&mut app, Command::Export);
        assert!(app.export.is_none(), "{id}");
        assert!(
            app.status.as_deref().unwrap().contains(id),
            "{:?}",
            app.status
        );
    }
}

#[test]
fn snapshot_panel() {
    let (_d, mut app) = new_app(true);
    open_on(&mut app, "fixtures/moe-peft");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Right); // vllm
    focus(&mut app, Field::Rule);
    cmd(&mut app, Command::Right); // rank K
    focus(&mut app, Field::Value);
    snapshot("panel", &snap(&mut app));
}

#[test]
fn snapshot_panel_refused() {
    let (_d, mut app) = new_app(true);
    let tmp = tempfile::tempdir().unwrap();
    open_on(&mut app, "fixtures/router");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Right); // vllm
    set_folder(&mut app, &tmp.path().join("r"));
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    // The folder shown is the temporary one: show a stable one.
    app.export.as_mut().unwrap().folder = "./router-vllm".into();
    snapshot("panel_refused", &draw(&mut app, 80, 24));
}

/// GGUF from the panel: llama.cpp the only engine, Q8_0 among the types, a `.gguf` file named;
/// the export is the command line's (`export::export` with `Format::Gguf`), and the file joins
/// the list as a GGUF adapter. Back to PEFT, Q8_0 is no choice.
#[test]
fn the_panel_writes_a_gguf_file_in_the_chosen_type() {
    use lorascope::adapter::layout::Format;
    let (_d, mut app) = new_app(true);
    app.export_dir = PathBuf::from("/plots");
    let n = app.adapters.len();
    open_on(&mut app, "fixtures/moe-peft");
    assert_eq!(panel(&app).field, Field::Format);
    cmd(&mut app, Command::Right);
    assert!(panel(&app).gguf);
    assert_eq!(panel(&app).engine, lorascope::export::Engine::Llamacpp);
    assert_eq!(panel(&app).folder, "/plots/moe-peft-llamacpp.gguf");
    focus(&mut app, Field::Engine);
    cmd(&mut app, Command::Right); // the only engine
    assert_eq!(panel(&app).engine, lorascope::export::Engine::Llamacpp);
    focus(&mut app, Field::Dtype);
    cmd(&mut app, Command::Left); // source → q8_0 (the last)
    assert_eq!(panel(&app).dtype, "q8_0");
    assert_eq!(panel(&app).folder, "/plots/moe-peft-llamacpp-q8_0.gguf");
    let text = screen_text(&draw(&mut app, W, H));
    assert!(
        text.contains("[gguf file]") && text.contains("[q8_0]") && text.contains("output file"),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe.gguf");
    set_folder(&mut app, &out);
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    let State::Done(done) = &panel(&app).state else {
        panic!("no report: {:?}", panel(&app).state);
    };
    assert_eq!(
        (done.report.format, done.report.dtype.as_str()),
        ("gguf", "Q8_0")
    );
    let text = screen_text(&draw(&mut app, W, H));
    assert!(text.contains("GGUF for llamacpp, Q8_0"), "{text}");
    assert!(out.is_file());
    assert_eq!(app.adapters.len(), n + 1);
    let i = app.selected_adapter().unwrap();
    assert_eq!(app.adapters[i].format(), Some(Format::Gguf));
    assert!(app.adapters[i].dtypes().contains(&"Q8_0".to_string()));
    cmd(&mut app, Command::Escape);
    // A GGUF output must be a .gguf file: the export says so, in the panel.
    open_on(&mut app, "fixtures/attn-r8");
    cmd(&mut app, Command::Right);
    set_folder(&mut app, &tmp.path().join("attn"));
    cmd(&mut app, Command::ExportStart);
    run_effects(&mut app);
    assert!(failure(&app).contains(".gguf"), "{}", failure(&app));
    // Back to PEFT: Q8_0 is GGUF's, the type returns to the source's.
    focus(&mut app, Field::Dtype);
    cmd(&mut app, Command::Left);
    assert_eq!(panel(&app).dtype, "q8_0");
    focus(&mut app, Field::Format);
    cmd(&mut app, Command::Right);
    assert!(!panel(&app).gguf);
    assert_eq!(panel(&app).engine, lorascope::export::Engine::Peft);
    assert_eq!(panel(&app).dtype, "source");
}

#[test]
fn snapshot_panel_gguf() {
    let (_d, mut app) = new_app(true);
    open_on(&mut app, "fixtures/moe-peft");
    cmd(&mut app, Command::Right); // gguf file
    focus(&mut app, Field::Dtype);
    cmd(&mut app, Command::Right); // f32
    cmd(&mut app, Command::Right); // f16
    snapshot("panel_gguf", &snap(&mut app));
}
