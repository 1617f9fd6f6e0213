//! Runtime reliability: files changing under a computation (no SIGBUS death), terminal escapes
//! in names and messages, and the explorer restoring the terminal on termination signals.

mod support;

use support::image::Image;
use support::pty;

use lorascope::adapter::discovery;
use lorascope::adapter::Adapter;
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::compute::tensor::{Mapped, PAUSE_ENV};
use lorascope::synth::{self, Dims, Pattern, Spec, TensorData};
use safetensors::Dtype;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lorascope"))
}

fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg"))
        .env("HF_HUB_CACHE", home.join("empty-hub"))
        .env_remove(PAUSE_ENV);
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().unwrap()
}

/// An attention adapter of a few hundred kB: its later tensors lie pages past its header.
fn adapter(dir: &Path, seed: u64) -> PathBuf {
    let dims = Dims {
        hidden: 256,
        q_out: 256,
        kv_out: 128,
        ..Dims::TOY
    };
    let mut s = Spec::new(dims, Pattern::Attention);
    s.attn_rank = 16;
    s.seed = seed;
    synth::write_adapter(dir, &s).unwrap();
    dir.to_path_buf()
}

fn load(dir: &Path) -> Adapter {
    let src = discovery::discover_path(dir);
    Adapter::load(&src[0], Default::default())
}

/// Cuts the adapter's file to its header: every tensor now lies past the end.
fn truncate(a: &Adapter) {
    let f = &a.files[0];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .unwrap()
        .set_len(f.data_start)
        .unwrap();
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_truncated_adapter_fails_and_another_one_is_still_computed() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (
        load(&adapter(&t.path().join("a"), 1)),
        load(&adapter(&t.path().join("b"), 2)),
    );
    let (ma, mb) = (Mapped::open(&a).unwrap(), Mapped::open(&b).unwrap());
    truncate(&a);
    let ctl = Control::default();
    let err = stats::compute_on(&ma, &Filter::default(), &ctl).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} changed while it was read", a.files[0].path.display())
    );
    let sb = stats::compute_on(&mb, &Filter::default(), &ctl).unwrap();
    assert_eq!(sb.deltas.len(), b.deltas.len());
    assert!(sb.deltas.iter().all(|d| d.fro_norm > 0.0));
}

#[test]
fn stats_on_a_file_truncated_while_it_runs_says_so_and_does_not_die() {
    let t = tempfile::tempdir().unwrap();
    let dir = adapter(&t.path().join("a"), 1);
    let a = load(&dir);
    let marker = t.path().join("mapped");
    let child = command(t.path(), &["stats", dir.to_str().unwrap()])
        .env(PAUSE_ENV, &marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the adapter to be mapped", || marker.exists());
    truncate(&a);
    std::fs::remove_file(&marker).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal: {:?}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} changed while it was read",
            a.files[0].path.display()
        )),
        "{err}"
    );
}

#[test]
fn the_explorer_survives_a_truncated_adapter_and_computes_the_next() {
    if !pty::available() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (da, db) = (
        adapter(&t.path().join("a-first"), 1),
        adapter(&t.path().join("b-second"), 2),
    );
    let a = load(&da);
    let marker = t.path().join("mapped");
    let xdg = t.path().join("xdg");
    let hub = t.path().join("empty-hub");
    let mut p = pty::Pty::spawn(
        bin(),
        &["tui", da.to_str().unwrap(), db.to_str().unwrap()],
        &[
            ("HOME", t.path()),
            ("XDG_CACHE_HOME", &xdg),
            ("HF_HUB_CACHE", &hub),
            (PAUSE_ENV, &marker),
        ],
        120,
        36,
    );
    assert!(p.wait_for("2 adapters", WAIT).is_some(), "{}", p.screen());
    // The stats view of the first adapter asks for its statistics.
    p.send(b"\r");
    assert!(p.wait_for("2 Layer map", WAIT).is_some(), "{}", p.screen());
    p.send(b"4");
    wait_until("the adapter to be mapped", || marker.exists());
    truncate(&a);
    let mark = p.mark();
    std::fs::remove_file(&marker).unwrap();
    assert!(
        p.wait_for_after(mark, "changed while it was read", WAIT)
            .is_some(),
        "{}",
        p.screen()
    );
    // Back to the list, the second adapter, its stats view: computed.
    p.send(b"q");
    assert!(p.wait_for_after(mark, "2 adapters", WAIT).is_some());
    let mark = p.mark();
    p.send(b"j\r");
    assert!(p.wait_for_after(mark, "2 Layer map", WAIT).is_some());
    let mark = p.mark();
    p.send(b"4");
    assert!(
        p.wait_for_after(mark, "q_proj", WAIT).is_some() && {
            std::thread::sleep(Duration::from_millis(300));
            p.screen().contains("b-second")
        },
        "{}",
        p.screen()
    );
    p.send(b"q");
    p.send(b"q");
    let status = p.wait(WAIT).expect("the explorer did not quit");
    assert!(status.success(), "exit status {status:?}:\n{}", p.screen());
    let raw = String::from_utf8_lossy(&p.raw()).into_owned();
    assert!(raw.contains("\x1b[?1049l") && raw.contains("\x1b[?1000l"));
}

/// Starts the explorer, sends `signal`, and checks the exit code and the restore sequences.
fn explorer_ends_on(signal: &str, code: i32) {
    if !pty::available() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let da = adapter(&t.path().join("a"), 1);
    let xdg = t.path().join("xdg");
    let hub = t.path().join("empty-hub");
    let mut p = pty::Pty::spawn(
        bin(),
        &["tui", da.to_str().unwrap()],
        &[
            ("HOME", t.path()),
            ("XDG_CACHE_HOME", &xdg),
            ("HF_HUB_CACHE", &hub),
        ],
        100,
        30,
    );
    assert!(p.wait_for("1 adapter", WAIT).is_some(), "{}", p.screen());
    let pid = p.program_pid().expect("the explorer's pid");
    let before = p.raw().len();
    let kill = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = p.wait(WAIT).expect("the explorer did not end");
    assert_eq!(status.code(), Some(code), "{status:?}");
    let raw = p.raw();
    let after = String::from_utf8_lossy(&raw[before..]).into_owned();
    for (seq, what) in [
        ("\x1b[?1049l", "main screen back"),
        ("\x1b[?1000l", "mouse capture off"),
        ("\x1b[?1006l", "SGR mouse off"),
        ("\x1b[?25h", "cursor shown"),
    ] {
        assert!(
            after.contains(seq),
            "no {what} ({seq:?}) after SIG{signal}; output after the signal: {after:?}"
        );
    }
}

#[test]
fn the_explorer_restores_the_terminal_on_sigterm() {
    explorer_ends_on("TERM", 143);
}

#[test]
fn the_explorer_restores_the_terminal_on_sighup() {
    explorer_ends_on("HUP", 129);
}

const EVIL: &str = "\x1b]0;pwned\x07\x1b[2J\u{9b}31m";

fn assert_clean(what: &str, bytes: &[u8]) {
    let s = String::from_utf8_lossy(bytes);
    assert!(
        !s.contains(['\x1b', '\x07', '\u{9b}']),
        "raw control characters in {what}: {s:?}"
    );
}

#[test]
fn names_and_messages_cannot_drive_the_terminal() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join(format!("run{EVIL}"));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid LoRA pair whose module name carries the escapes, and a config.
    let name = |role: &str| {
        format!("base_model.model.model.layers.0.self_attn.q{EVIL}_proj.{role}.weight")
    };
    let f32s = |n: usize| Some(synth::encode(&vec![0.5; n], Dtype::F32));
    let tensors = [
        TensorData {
            name: name("lora_A"),
            dtype: Dtype::F32,
            shape: vec![2, 4],
            bytes: f32s(8),
        },
        TensorData {
            name: name("lora_B"),
            dtype: Dtype::F32,
            shape: vec![4, 2],
            bytes: f32s(8),
        },
    ];
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        synth::safetensors_bytes(&tensors, true),
    )
    .unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}"#,
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    for args in [
        vec!["scan", d],
        vec!["inspect", d],
        vec!["stats", d],
        vec!["stats", &format!("no-such{EVIL}")],
    ] {
        let out = run(t.path(), &args);
        assert!(!out.stdout.is_empty() || !out.stderr.is_empty(), "{args:?}");
        assert_clean(&format!("stdout of {args:?}"), &out.stdout);
        assert_clean(&format!("stderr of {args:?}"), &out.stderr);
    }
    // The names are still there, made visible.
    let out = run(t.path(), &["inspect", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\x1b]0;pwned\\x07"));
}

#[test]
fn an_unusable_adapter_names_its_path_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = adapter(&t.path().join("broken"), 1);
    let a = load(&dir);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a.files[0].path)
        .unwrap()
        .set_len(a.files[0].data_start + 10)
        .unwrap();
    let out = run(t.path(), &["stats", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches(dir.to_str().unwrap()).count(), 1, "{err}");
}

/// A toy attention adapter in `dtype` with one NaN written into the first delta's A factor.
fn poisoned(dir: &Path, dtype: Dtype, seed: u64) -> (PathBuf, usize) {
    let mut s = Spec::new(Dims::TOY, Pattern::Attention);
    s.dtype = dtype;
    s.seed = seed;
    synth::write_adapter(dir, &s).unwrap();
    let a = load(dir);
    let (t, f) = a.tensor_file(a.deltas[0].a.tensor);
    let mut bytes = std::fs::read(&f.path).unwrap();
    let at = (f.data_start + t.info.begin) as usize;
    let nan = synth::encode(&[f64::NAN], dtype);
    bytes[at..at + nan.len()].copy_from_slice(&nan);
    std::fs::write(&f.path, bytes).unwrap();
    (dir.to_path_buf(), a.deltas.len())
}

fn stats_json(home: &Path, dir: &Path) -> Vec<Value> {
    let out = run(home, &["stats", dir.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["deltas"].as_array().unwrap().clone()
}

#[test]
fn a_nan_factor_is_reported_as_non_finite_in_every_dtype() {
    let t = tempfile::tempdir().unwrap();
    for (i, dtype) in [Dtype::F32, Dtype::BF16, Dtype::F16]
        .into_iter()
        .enumerate()
    {
        let (dir, n) = poisoned(&t.path().join(format!("{dtype:?}")), dtype, i as u64 + 1);
        let deltas = stats_json(t.path(), &dir);
        assert_eq!(deltas.len(), n);
        let bad: Vec<&Value> = deltas.iter().filter(|d| d["finite"] == false).collect();
        assert_eq!(bad.len(), 1, "{dtype:?}: one delta holds the NaN");
        for f in [
            "fro_norm",
            "spectral_norm",
            "effective_rank",
            "stable_rank",
            "numerical_rank",
            "energy_rank_90",
            "energy_rank_99",
            "singular_values",
        ] {
            assert!(bad[0][f].is_null(), "{dtype:?}: {f} = {}", bad[0][f]);
        }
        assert!(bad[0]["rank"].is_number() && bad[0]["target"].is_string());
        let good = deltas.iter().filter(|d| d["finite"] == true);
        assert_eq!(good.clone().count(), n - 1);
        assert!(good
            .into_iter()
            .all(|d| d["fro_norm"].as_f64().unwrap() > 0.0));
        // The table says so instead of printing numbers.
        let out = run(t.path(), &["stats", dir.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().filter(|l| l.contains("non-finite")).count(),
            1,
            "{text}"
        );
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }
}

#[test]
fn an_overflowing_alpha_is_non_finite_not_a_number() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("huge");
    let mut s = Spec::new(Dims::TOY, Pattern::Attention);
    s.alpha = 1e300;
    synth::write_adapter(&dir, &s).unwrap();
    let deltas = stats_json(t.path(), &dir);
    assert!(!deltas.is_empty());
    for d in &deltas {
        assert_eq!(d["finite"], false, "{d}");
        assert!(
            d["fro_norm"].is_null() && d["effective_rank"].is_null(),
            "{d}"
        );
    }
}

#[test]
fn compare_says_which_side_is_non_finite() {
    let t = tempfile::tempdir().unwrap();
    let (a, _) = poisoned(&t.path().join("a"), Dtype::F32, 1);
    let b = t.path().join("b");
    synth::write_adapter(&b, &Spec::new(Dims::TOY, Pattern::Attention)).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = run(t.path(), &["compare", a, b, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pairs = v["pairs"].as_array().unwrap();
    let bad: Vec<&Value> = pairs.iter().filter(|p| p["finite_a"] == false).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["finite_b"], true);
    assert!(bad[0]["fro_norm_a"].is_null() && bad[0]["cosine"].is_null());
    assert!(bad[0]["fro_norm_b"].as_f64().unwrap() > 0.0);
    assert!(bad[0]["note"].as_str().unwrap().contains("non-finite"));
    assert!(pairs
        .iter()
        .filter(|p| p["finite_a"] == true)
        .all(|p| p["cosine"].is_number()));
    let out = run(t.path(), &["compare", a, b]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 pairs with non-finite values"), "{text}");
    assert!(!text.contains("NaN"), "{text}");
}

#[test]
fn plots_draw_non_finite_cells_in_their_own_colour() {
    let t = tempfile::tempdir().unwrap();
    let (bad, _) = poisoned(&t.path().join("bad"), Dtype::BF16, 1);
    let good = t.path().join("good");
    synth::write_adapter(&good, &Spec::new(Dims::TOY, Pattern::Attention)).unwrap();
    let c = lorascope::plot::NONFINITE;
    let magenta = |dir: &Path, name: &str| {
        let out = t.path().join(name);
        let o = run(
            t.path(),
            &[
                "plot",
                dir.to_str().unwrap(),
                "--kind",
                "layers",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Image::read(&out).count([c.0, c.1, c.2])
    };
    // One cell (q_proj of layer 0) and the legend swatch; none without a NaN.
    assert!(magenta(&bad, "bad.png") > 100);
    assert_eq!(magenta(&good, "good.png"), 0);
}

/// The explorer over the poisoned adapter, statistics computed as the event loop would.
fn explorer_on_poisoned(color: bool) -> (tempfile::TempDir, lorascope::tui::App) {
    use lorascope::tui::app::{Action, Effect, Options};
    use lorascope::tui::keymap::Command;
    let t = tempfile::tempdir().unwrap();
    let (dir, _) = poisoned(&t.path().join("nan"), Dtype::F32, 1);
    let mut src = discovery::discover_path(&dir).remove(0);
    src.id = "fixtures/nan".into();
    let mut a = Adapter::load(&src, Default::default());
    a.path = PathBuf::from("/cache/nan");
    let mut app = lorascope::tui::App::new(Options {
        color,
        export_dir: PathBuf::from("."),
        scanning: "scanning /cache".into(),
    });
    app.update(Action::ScanDone {
        adapters: vec![a],
        note: None,
    });
    app.update(Action::Command(Command::Open));
    app.update(Action::Command(Command::View(1)));
    for e in app.take_effects() {
        if let Effect::Stats { job, adapter } = e {
            let r = stats::compute(&adapter, &Filter::default(), &Control::default())
                .map_err(|e| e.to_string());
            app.update(Action::Done {
                job,
                result: r.map(Into::into),
                secs: 0.01,
            });
        }
    }
    (t, app)
}

fn draw(app: &mut lorascope::tui::App) -> ratatui::Terminal<ratatui::backend::TestBackend> {
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 36)).unwrap();
    lorascope::tui::event::draw(&mut term, app).unwrap();
    term
}

#[test]
fn the_explorer_marks_non_finite_cells_and_stats() {
    use lorascope::tui::app::Action;
    use lorascope::tui::keymap::Command;
    use lorascope::tui::ui::heatmap::{NONFINITE_BG, NONFINITE_MARK};
    // With colour: the NaN cell has its own background and mark; the others do not.
    let (_t, mut app) = explorer_on_poisoned(true);
    let term = draw(&mut app);
    let buf = term.backend().buffer();
    let marked: Vec<_> = buf
        .content()
        .iter()
        .filter(|c| c.bg == NONFINITE_BG)
        .collect();
    assert!(!marked.is_empty(), "no non-finite cell drawn");
    assert!(marked.iter().any(|c| c.symbol() == NONFINITE_MARK));
    // Without colour: the snapshot shows the mark.
    let (_t, mut app) = explorer_on_poisoned(false);
    insta::assert_snapshot!("nonfinite_layer_map", draw(&mut app).backend());
    // The Stats tab says non-finite instead of numbers.
    app.update(Action::Command(Command::View(3)));
    let text = format!("{}", draw(&mut app).backend());
    assert!(text.contains("non-finite"), "{text}");
    assert!(!text.contains("NaN"), "{text}");
}

/// A hub cache with a PEFT expert adapter (layers 0 and 1, 2 experts) and the MXFP4 base its
/// config names, whose expert 1 of layer 0's gate_up has one E8M0 scale of 255 (NaN). Returns
/// the cache and the adapter's snapshot.
fn adapter_on_a_nan_base(root: &Path) -> (PathBuf, PathBuf) {
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    use lorascope::synth::Item;
    let hub = root.join("hub");
    let dims = Dims::TOY_MXFP4;
    let mut spec = Spec::new(dims, Pattern::PeftExperts { layers: vec![0, 1] });
    spec.expert_rank = 2;
    synth::write_hub_repo(
        &hub,
        "me/moe",
        &[Item::Adapter {
            sub: String::new(),
            spec,
        }],
    )
    .unwrap();
    write_base(
        &hub,
        "openai/gpt-oss-20b",
        &BaseSpec::new(dims, ExpertStorage::Mxfp4),
    )
    .unwrap();
    let snapshot = |id: &str| {
        let repo = hub.join(format!("models--{}", id.replace('/', "--")));
        let rev = std::fs::read_to_string(repo.join("refs/main")).unwrap();
        repo.join("snapshots").join(rev.trim())
    };
    let base = snapshot("openai/gpt-oss-20b");
    let index: Value =
        serde_json::from_slice(&std::fs::read(base.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let name = "model.layers.0.mlp.experts.gate_up_proj_scales";
    let shard = base.join(index["weight_map"][name].as_str().unwrap());
    let h = lorascope::adapter::format::read_header(&shard).unwrap();
    let t = h.tensors.iter().find(|t| t.name == name).unwrap();
    let expert_1 = h.data_start + t.begin + (t.end - t.begin) / t.shape[0] as u64;
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[expert_1 as usize] = 255;
    // Through the snapshot link, into the blob.
    std::fs::write(&shard, bytes).unwrap();
    let adapter = snapshot("me/moe");
    (hub, adapter)
}

/// Issue 22, 13: a NaN in the base makes the base metrics of that expert non-finite, and one
/// non-finite expert makes its layer's cell non-finite (the grid's rule for the adapter's own
/// metrics), in the explorer's maps and in plots: never a mean over the other experts, never
/// grey "no value".
#[test]
fn a_non_finite_base_weight_makes_base_metric_cells_non_finite() {
    use lorascope::view::grid::{self, CellKind, Metric};
    let t = tempfile::tempdir().unwrap();
    let (hub, dir) = adapter_on_a_nan_base(t.path());
    let a = load(&dir);
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let session = lorascope::base::session_for(&a, None, &[hub]).unwrap();
    let base =
        lorascope::base::stats::compute(&session, &a, &Filter::default(), &Control::default())
            .unwrap();
    let rel = Metric::Relative.index();
    // The explorer's maps (the grids `p` exports too).
    let layers = grid::layer_grid(&a, Some(&st), Some(&base));
    let row = |g: &grid::Grid, l: usize| g.row_layers.iter().position(|&r| r == Some(l)).unwrap();
    for (c, col) in layers.cols.iter().enumerate() {
        let kind = |l| layers.kind(row(&layers, l), c, rel);
        if col.target.as_str() == "gate_up_proj" {
            assert_eq!(kind(0), CellKind::NonFinite, "{} {:?}", col.label, col.tag);
            assert!(matches!(kind(1), CellKind::Value(_)), "{:?}", kind(1));
        } else {
            assert_ne!(kind(0), CellKind::NonFinite, "{}", col.label);
        }
    }
    let target = lorascope::adapter::target::Target::parse("gate_up_proj");
    let experts = grid::expert_grid(&a, &target, Some(&st), Some(&base));
    let col = |e: usize| {
        experts
            .cols
            .iter()
            .position(|c| c.expert == Some(Some(e)))
            .unwrap()
    };
    let r0 = row(&experts, 0);
    assert_eq!(experts.kind(r0, col(1), rel), CellKind::NonFinite);
    assert!(matches!(experts.kind(r0, col(0), rel), CellKind::Value(_)));
    // The plots draw those cells magenta (layers: gate_up's mean and max; experts: expert 1).
    let magenta = |kind: &str| {
        let out = t.path().join(format!("{kind}.png"));
        let o = run(
            t.path(),
            &[
                "plot",
                dir.to_str().unwrap(),
                "--kind",
                kind,
                "--metric",
                "relative",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c = lorascope::plot::NONFINITE;
        Image::read(&out).count([c.0, c.1, c.2])
    };
    assert!(magenta("layers") > 200);
    assert!(magenta("experts") > 100);
}
