//! PNG plots: decoded back and checked pixel by pixel where the library says it drew each cell.

use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::compare::{self, Comparison};
use lorascope::compute::stats::{self, AdapterStats, Control, DeltaStats, Filter};
use lorascope::plot::{self, Cell, CompareWith, Metric, Panel, PlotKind, PlotOptions};
use lorascope::synth::{self, Dims, Pattern, Spec};
use std::path::{Path, PathBuf};

mod support;

use support::image::Image;

fn is_grey(p: [u8; 3]) -> bool {
    p[0] == p[1] && p[1] == p[2] && p[0] >= 150 && p[0] < 255
}

fn load(dir: &Path) -> Adapter {
    let src = discovery::discover_path(dir);
    let a = Adapter::load(&src[0], LayoutOptions::default());
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

fn adapter(root: &Path, name: &str, spec: &Spec) -> Adapter {
    let dir = root.join(name);
    synth::write_adapter(&dir, spec).expect("write synth adapter");
    load(&dir)
}

fn stats_of(a: &Adapter) -> AdapterStats {
    stats::compute(a, &Filter::default(), &Control::default()).expect("stats")
}

/// TOY shapes (3 layers, 4 experts), attention on every layer, expert LoRA on layer 1 only.
fn toy_experts(seed: u64) -> Spec {
    let mut s = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] });
    s.seed = seed;
    s
}

fn toy_attention(seed: u64) -> Spec {
    let mut s = Spec::new(Dims::TOY, Pattern::Attention);
    s.seed = seed;
    s
}

fn cell<'a>(cells: &'a [Cell], panel: Panel, row: &str, col: &str) -> &'a Cell {
    cells
        .iter()
        .find(|c| c.panel == panel && c.row == row && c.col == col)
        .unwrap_or_else(|| panic!("no cell {panel:?} {row}/{col}"))
}

/// A pixel just inside the cell's corner, away from the value written in its centre.
fn corner(img: &Image, c: &Cell) -> [u8; 3] {
    img.px(c.x0 + 1, c.y0 + 1)
}

/// Every filled cell shows its colour in the file; every empty one is neutral grey.
fn assert_cells_drawn(img: &Image, cells: &[Cell]) {
    assert!(!cells.is_empty());
    for c in cells {
        let p = corner(img, c);
        match c.fill {
            Some(f) => {
                assert_eq!(p, f, "{c:?}");
                assert!(!is_grey(p), "a filled cell must not look empty: {c:?}");
            }
            None => assert!(is_grey(p), "empty cell {c:?} is {p:?}"),
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn layers_heatmap_shows_where_the_experts_are() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "moe", &toy_experts(1));
    let st = stats_of(&a);
    let out = tmp.path().join("layers.png");
    let r = plot::write_png(&st, None, &PlotOptions::new(PlotKind::Layers), &out).unwrap();
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), (1200, 800));
    assert_eq!((r.width, r.height), (1200, 800));
    img.assert_not_blank();
    assert_cells_drawn(&img, &r.cells);
    // 3 layers × (q, k, v, o, gate_up mean/max, down mean/max).
    assert_eq!(r.cells.len(), 3 * 8);
    for col in ["gate_up mean", "gate_up max", "down mean", "down max"] {
        assert!(cell(&r.cells, Panel::Single, "0", col).fill.is_none());
        assert!(cell(&r.cells, Panel::Single, "2", col).fill.is_none());
        let with = cell(&r.cells, Panel::Single, "1", col);
        assert!(with.fill.is_some());
        assert_ne!(
            corner(&img, with),
            corner(&img, cell(&r.cells, Panel::Single, "0", col)),
            "a layer with expert LoRA must differ from one without"
        );
    }
    for row in ["0", "1", "2"] {
        assert!(cell(&r.cells, Panel::Single, row, "q").fill.is_some());
    }
    // The max over experts is at least the mean.
    let mean = cell(&r.cells, Panel::Single, "1", "down mean")
        .value
        .unwrap();
    let max = cell(&r.cells, Panel::Single, "1", "down max")
        .value
        .unwrap();
    assert!(max >= mean);
    // Values match the statistics, and the scale's ends are viridis' ends.
    let q1 = st
        .deltas
        .iter()
        .find(|d| d.layer == Some(1) && d.target == "q_proj")
        .unwrap();
    let c = cell(&r.cells, Panel::Single, "1", "q");
    assert!((c.value.unwrap() - q1.fro_norm).abs() < 1e-12);
    let by_value = |pick_max: bool| {
        r.cells
            .iter()
            .filter(|c| c.value.is_some())
            .max_by(|x, y| {
                let (a, b) = (x.value.unwrap(), y.value.unwrap());
                if pick_max {
                    a.total_cmp(&b)
                } else {
                    b.total_cmp(&a)
                }
            })
            .unwrap()
    };
    assert_eq!(corner(&img, by_value(true)), [254, 232, 37]);
    assert_eq!(corner(&img, by_value(false)), [68, 1, 84]);
}

#[test]
fn layers_heatmap_of_another_metric_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "attn", &toy_attention(3));
    let st = stats_of(&a);
    let out = tmp.path().join("erank.png");
    let opts = PlotOptions {
        metric: Metric::Erank,
        width: Some(640),
        height: Some(480),
        ..PlotOptions::new(PlotKind::Layers)
    };
    let r = plot::write_png(&st, None, &opts, &out).unwrap();
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), (640, 480));
    img.assert_not_blank();
    assert_cells_drawn(&img, &r.cells);
    let d = &st.deltas[0];
    let c = cell(&r.cells, Panel::Single, &d.layer.unwrap().to_string(), "q");
    assert!((c.value.unwrap() - d.effective_rank).abs() < 1e-12);
    // Attention only: no empty cell at all.
    assert!(r.cells.iter().all(|c| c.fill.is_some()));
}

#[test]
fn experts_heatmap_has_a_cell_per_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "moe", &toy_experts(1));
    let st = stats_of(&a);
    let out = tmp.path().join("experts.png");
    let r = plot::write_png(&st, None, &PlotOptions::new(PlotKind::Experts), &out).unwrap();
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), (1200, 800));
    img.assert_not_blank();
    assert_cells_drawn(&img, &r.cells);
    assert_eq!(r.cells.len(), 3 * 4, "3 layers × 4 experts");
    for e in 0..4 {
        let col = e.to_string();
        assert!(cell(&r.cells, Panel::Single, "0", &col).fill.is_none());
        let c = cell(&r.cells, Panel::Single, "1", &col);
        // The default expert target is the first in the model's order: gate_up_proj.
        let d = st
            .deltas
            .iter()
            .find(|d| d.layer == Some(1) && d.target == "gate_up_proj" && d.expert == Some(e))
            .unwrap();
        assert!((c.value.unwrap() - d.fro_norm).abs() < 1e-12);
    }
    // Another target on request.
    let opts = PlotOptions {
        target: Some("down_proj".into()),
        ..PlotOptions::new(PlotKind::Experts)
    };
    let r = plot::write_png(&st, None, &opts, &out).unwrap();
    let d = st
        .deltas
        .iter()
        .find(|d| d.layer == Some(1) && d.target == "down_proj" && d.expert == Some(2))
        .unwrap();
    let c = cell(&r.cells, Panel::Single, "1", "2");
    assert!((c.value.unwrap() - d.fro_norm).abs() < 1e-12);
}

#[test]
fn spectrum_draws_a_line_per_target() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "moe", &toy_experts(1));
    let st = stats_of(&a);
    let out = tmp.path().join("spectrum.png");
    let r = plot::write_png(&st, None, &PlotOptions::new(PlotKind::Spectrum), &out).unwrap();
    assert!(r.cells.is_empty(), "no heatmap in a single spectrum");
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), (1200, 800));
    img.assert_not_blank();
    // Lines in the first palette colours: q_proj (blue) and k_proj (orange).
    assert!(img.count([31, 119, 180]) > 100);
    assert!(img.count([255, 127, 14]) > 100);
    // Per layer, per expert, and one layer: all drawable.
    for (t, l) in [
        (Some("q_proj"), None),
        (Some("down_proj"), Some(1)),
        (None, Some(1)),
    ] {
        let opts = PlotOptions {
            target: t.map(String::from),
            layer: l,
            ..PlotOptions::new(PlotKind::Spectrum)
        };
        plot::write_png(&st, None, &opts, &out).unwrap();
        Image::read(&out).assert_not_blank();
    }
}

fn comparison(a: &Adapter, b: &Adapter) -> Comparison {
    compare::compare(a, b, &Control::default()).expect("compare")
}

#[test]
fn compare_puts_both_on_one_scale_with_cosines() {
    let tmp = tempfile::tempdir().unwrap();
    // The same adapter twice: equal colours in a and b, cosine 1 everywhere.
    let a = adapter(tmp.path(), "a", &toy_experts(1));
    let b = adapter(tmp.path(), "b", &toy_experts(1));
    let (sa, sb) = (stats_of(&a), stats_of(&b));
    let c = comparison(&a, &b);
    let with = CompareWith {
        stats: &sb,
        comparison: &c,
    };
    let out = tmp.path().join("cmp.png");
    let r = plot::write_png(&sa, Some(with), &PlotOptions::new(PlotKind::Layers), &out).unwrap();
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), plot::DEFAULT_COMPARE_SIZE);
    img.assert_not_blank();
    assert_cells_drawn(&img, &r.cells);
    for p in [Panel::A, Panel::B, Panel::Cosine] {
        assert!(r.cells.iter().any(|c| c.panel == p), "{p:?} missing");
    }
    for ca in r.cells.iter().filter(|c| c.panel == Panel::A) {
        let cb = cell(&r.cells, Panel::B, &ca.row, &ca.col);
        assert_eq!(ca.fill, cb.fill, "one colour scale: {ca:?} vs {cb:?}");
        assert_ne!(ca.x0, cb.x0, "side by side");
    }
    let cos = cell(&r.cells, Panel::Cosine, "1", "q");
    assert!((cos.value.unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(corner(&img, cos), [215, 48, 39], "cosine 1 is the red end");
    assert!(cell(&r.cells, Panel::Cosine, "0", "gate_up mean")
        .fill
        .is_none());
    assert!(cell(&r.cells, Panel::Cosine, "1", "gate_up mean")
        .fill
        .is_some());

    // An attention-only b: its expert columns are empty, and so are their cosines.
    let b2 = adapter(tmp.path(), "b2", &toy_attention(7));
    let sb2 = stats_of(&b2);
    let c2 = comparison(&a, &b2);
    let with = CompareWith {
        stats: &sb2,
        comparison: &c2,
    };
    for kind in [PlotKind::Layers, PlotKind::Experts, PlotKind::Spectrum] {
        let out = tmp.path().join(format!("cmp-{}.png", kind.as_str()));
        let r = plot::write_png(&sa, Some(with), &PlotOptions::new(kind), &out).unwrap();
        let img = Image::read(&out);
        assert_eq!((img.w, img.h), plot::DEFAULT_COMPARE_SIZE);
        img.assert_not_blank();
        assert_cells_drawn(&img, &r.cells);
        assert!(r.cells.iter().any(|c| c.panel == Panel::Cosine));
        if kind == PlotKind::Layers {
            assert!(cell(&r.cells, Panel::A, "1", "down mean").fill.is_some());
            assert!(cell(&r.cells, Panel::B, "1", "down mean").fill.is_none());
            let cq = cell(&r.cells, Panel::Cosine, "1", "q").value.unwrap();
            assert!(cq.abs() < 1.0, "unrelated adapters: {cq}");
        }
    }
}

#[test]
fn experts_of_an_adapter_without_expert_lora_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "attn", &toy_attention(3));
    let st = stats_of(&a);
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("experts.png");
    let e = plot::write_png(&st, None, &PlotOptions::new(PlotKind::Experts), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no per-expert LoRA"), "{e}");
    assert!(
        files_in(&outdir).is_empty(),
        "nothing written, no temporary left"
    );

    // A file already there is left as it was.
    std::fs::write(&out, b"old").unwrap();
    assert!(plot::write_png(&st, None, &PlotOptions::new(PlotKind::Experts), &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(files_in(&outdir), vec![out.clone()]);

    // An attention target asked for by name.
    let moe = adapter(tmp.path(), "moe", &toy_experts(1));
    let sm = stats_of(&moe);
    let opts = PlotOptions {
        target: Some("q_proj".into()),
        ..PlotOptions::new(PlotKind::Experts)
    };
    let e = plot::write_png(&sm, None, &opts, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("q_proj has no per-expert LoRA"), "{e}");
    assert!(e.contains("gate_up_proj, down_proj"), "{e}");
}

#[test]
fn bad_requests_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "moe", &toy_experts(1));
    let st = stats_of(&a);
    let layers = PlotOptions::new(PlotKind::Layers);
    let err = |opts: &PlotOptions, out: &Path| {
        plot::write_png(&st, None, opts, out)
            .unwrap_err()
            .to_string()
    };
    // Unwritable destinations.
    let missing = tmp.path().join("missing").join("x.png");
    assert!(err(&layers, &missing).contains("does not exist"));
    assert!(!missing.exists());
    let file = tmp.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert!(err(&layers, &file.join("x.png")).contains("cannot write"));
    let dir_png = tmp.path().join("d.png");
    std::fs::create_dir(&dir_png).unwrap();
    assert!(err(&layers, &dir_png).contains("folder"));
    assert!(err(&layers, &tmp.path().join("x.jpg")).contains(".png"));
    // Selections that match nothing.
    let out = tmp.path().join("x.png");
    let o = PlotOptions {
        target: Some("nope".into()),
        ..layers.clone()
    };
    assert!(err(&o, &out).contains("targets: q_proj, k_proj, v_proj, o_proj, gate_up_proj"));
    let o = PlotOptions {
        layer: Some(9),
        ..layers.clone()
    };
    assert!(err(&o, &out).contains("layers: 0–2"), "{}", err(&o, &out));
    let o = PlotOptions {
        width: Some(5),
        ..layers.clone()
    };
    assert!(err(&o, &out).contains("out of range"));
    assert!(!out.exists());
    let names: Vec<String> = files_in(tmp.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "temporaries left: {names:?}"
    );
}

fn delta(layer: usize, target: &str, expert: Option<usize>, sv: Vec<f64>, x: f64) -> DeltaStats {
    DeltaStats {
        // Made-up statistics of no adapter: no delta to point at.
        index: 0,
        layer: Some(layer),
        target: target.into(),
        expert,
        rank: sv.len(),
        scale: 1.0,
        fro_norm: x,
        spectral_norm: x,
        effective_rank: x,
        stable_rank: x,
        numerical_rank: 0,
        energy_rank_90: 0,
        energy_rank_99: 0,
        singular_values: sv,
        finite: true,
        dead: false,
    }
}

#[test]
fn odd_statistics_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("odd.png");
    // NaN and infinite metrics, zero and empty spectra, one value everywhere.
    let st = AdapterStats {
        id: "odd/stats".into(),
        deltas: vec![
            delta(0, "q_proj", None, vec![0.0, 0.0], f64::NAN),
            delta(2, "q_proj", None, vec![], f64::INFINITY),
            delta(2, "down_proj", Some(3), vec![f64::NAN], 1.0),
            delta(2, "custom_thing", None, vec![1.0], 1.0),
        ],
        full_tensors: vec![],
    };
    for kind in [PlotKind::Layers, PlotKind::Experts] {
        let r = plot::write_png(&st, None, &PlotOptions::new(kind), &out).unwrap();
        Image::read(&out);
        assert!(r.cells.iter().all(|c| c.value.is_none_or(f64::is_finite)));
    }
    // The only usable singular value is custom_thing's.
    plot::write_png(&st, None, &PlotOptions::new(PlotKind::Spectrum), &out).unwrap();
    let zero = AdapterStats {
        deltas: vec![delta(0, "q_proj", None, vec![0.0; 4], 0.0)],
        ..st.clone()
    };
    let e = plot::write_png(&zero, None, &PlotOptions::new(PlotKind::Spectrum), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("zero"), "{e}");
    let empty = AdapterStats {
        deltas: vec![],
        ..st
    };
    for kind in [PlotKind::Layers, PlotKind::Experts, PlotKind::Spectrum] {
        let e = plot::write_png(&empty, None, &PlotOptions::new(kind), &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no LoRA deltas"), "{e}");
    }
}

#[test]
fn export_view_names_the_file_after_the_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "moe", &toy_experts(1));
    let mut st = stats_of(&a);
    st.id = "org/moe-adapter".into();
    let dir = tmp.path().join("exports");
    std::fs::create_dir(&dir).unwrap();
    let p = plot::export_view(&st, None, &PlotOptions::new(PlotKind::Layers), &dir).unwrap();
    assert_eq!(p, dir.join("org-moe-adapter-layers.png"));
    Image::read(&p).assert_not_blank();
    let opts = PlotOptions {
        metric: Metric::Srank,
        target: Some("down_proj".into()),
        ..PlotOptions::new(PlotKind::Experts)
    };
    let p = plot::export_view(&st, None, &opts, &dir).unwrap();
    assert_eq!(p, dir.join("org-moe-adapter-experts-down_proj-srank.png"));
    let b = adapter(tmp.path(), "b", &toy_experts(2));
    let mut sb = stats_of(&b);
    sb.id = "org/other".into();
    let c = comparison(&a, &b);
    let with = CompareWith {
        stats: &sb,
        comparison: &c,
    };
    let p =
        plot::export_view(&st, Some(with), &PlotOptions::new(PlotKind::Spectrum), &dir).unwrap();
    assert_eq!(p, dir.join("org-moe-adapter-vs-org-other-spectrum.png"));
    assert_eq!(files_in(&dir).len(), 3);
    // A folder that is not there is an error, not a new folder.
    let e = plot::export_view(
        &st,
        None,
        &PlotOptions::new(PlotKind::Layers),
        &tmp.path().join("no"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

use support::lorascope_at_home as run;

#[test]
fn cli_writes_each_kind_and_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    synth::write_adapter(&t.join("moe"), &toy_experts(1)).unwrap();
    synth::write_adapter(&t.join("attn"), &toy_attention(2)).unwrap();
    let (moe, attn) = (t.join("moe"), t.join("attn"));
    let (moe, attn) = (moe.to_str().unwrap(), attn.to_str().unwrap());
    let out_dir = t.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for (kind, extra) in [
        ("layers", vec!["--metric", "spectral"]),
        ("experts", vec!["--target", "down_proj"]),
        ("spectrum", vec!["--layer", "1"]),
        (
            "layers",
            vec!["--compare", attn, "--width", "900", "--height", "600"],
        ),
    ] {
        let png = out_dir.join(format!("{kind}-{}.png", extra.len()));
        let png_s = png.to_str().unwrap();
        let mut args = vec!["plot", moe, "--kind", kind, "--out", png_s];
        args.extend(&extra);
        let o = run(t, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("wrote"));
        let img = Image::read(&png);
        img.assert_not_blank();
        let want = if extra.contains(&"--compare") {
            (900, 600)
        } else {
            (1200, 800)
        };
        assert_eq!((img.w, img.h), want);
    }
    let before = files_in(&out_dir);
    let png = out_dir.join("bad.png");
    let png_s = png.to_str().unwrap();
    for (args, msg) in [
        (
            vec!["plot", attn, "--kind", "experts", "--out", png_s],
            "no per-expert LoRA",
        ),
        (
            vec!["plot", moe, "--layer", "7", "--out", png_s],
            "no delta at layer 7 (layers: 0-2)",
        ),
        (
            vec!["plot", moe, "--out", "/nonexistent-dir/x.png"],
            "does not exist",
        ),
    ] {
        let o = run(t, &args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(files_in(&out_dir), before, "failures write nothing");
}

// ---------------------------------------------------------------------------------------------
// The metrics against the base model.

mod base {
    use super::*;
    use lorascope::base::stats::{self as base_stats, Session};
    use lorascope::base::{self, Base};
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};

    const DIMS: Dims = Dims {
        layers: 2,
        hidden: 64,
        q_out: 64,
        kv_out: 32,
        experts: 2,
        inter: 32,
    };

    /// An expert adapter at DIMS and its base in a hub cache at `t/hub`.
    fn setup(t: &Path) -> (Adapter, PathBuf) {
        let a = adapter(
            t,
            "moe",
            &Spec::new(DIMS, Pattern::PeftExperts { layers: vec![0, 1] }),
        );
        let hub = t.join("hub");
        write_base(
            &hub,
            "openai/gpt-oss-20b",
            &BaseSpec::new(DIMS, ExpertStorage::Mxfp4),
        )
        .unwrap();
        (a, hub)
    }

    /// Each base metric's heatmap draws, per expert cell, that delta's base statistic.
    #[test]
    fn experts_heatmap_of_each_base_metric_draws_the_base_statistics() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, hub) = setup(tmp.path());
        let st = stats_of(&a);
        let (id, snap) = base::locate(&a, None, &[hub]).unwrap();
        let s = Session::new(Base::open(&id, &snap).unwrap());
        let rep = base_stats::compute(&s, &a, &Filter::default(), &Control::default()).unwrap();
        for metric in Metric::BASE {
            let opts = PlotOptions {
                metric,
                target: Some("down_proj".into()),
                base: Some(std::sync::Arc::new(rep.clone())),
                ..PlotOptions::new(PlotKind::Experts)
            };
            let out = tmp.path().join(format!("{}.png", metric.as_str()));
            let r = plot::write_png(&st, None, &opts, &out).unwrap();
            assert_cells_drawn(&Image::read(&out), &r.cells);
            let mut seen = 0;
            for (d, b) in st.deltas.iter().zip(&rep.deltas) {
                if d.target != "down_proj" {
                    continue;
                }
                let c = cell(
                    &r.cells,
                    Panel::Single,
                    &d.layer.unwrap().to_string(),
                    &d.expert.unwrap().to_string(),
                );
                let want = metric.of_base(b).unwrap();
                assert!(
                    (c.value.unwrap() - want).abs() <= 1e-12 * want,
                    "{metric:?} {:?}",
                    d.key()
                );
                seen += 1;
            }
            assert_eq!(seen, DIMS.layers * DIMS.experts);
            // Without the base statistics the figure is refused, not drawn empty.
            let none = PlotOptions { base: None, ..opts };
            let e = plot::write_png(&st, None, &none, &out)
                .unwrap_err()
                .to_string();
            assert!(e.contains("base model"), "{e}");
        }
    }

    #[test]
    fn cli_plots_a_base_metric_when_the_base_is_in_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, hub) = setup(tmp.path());
        let path = a.path.display().to_string();
        let out = tmp.path().join("rel.png");
        let args = |o: &Path| {
            vec![
                "plot".to_string(),
                path.clone(),
                "--kind".into(),
                "layers".into(),
                "--metric".into(),
                "relative".into(),
                "--out".into(),
                o.display().to_string(),
            ]
        };
        // The adapter is a folder, not in the cache: the base is named by its cache folder.
        let mut with = args(&out);
        with.extend([
            "--base".into(),
            hub.join("models--openai--gpt-oss-20b")
                .display()
                .to_string(),
        ]);
        let r = run(
            tmp.path(),
            &with.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        Image::read(&out).assert_not_blank();
        let missing = tmp.path().join("missing.png");
        let r = run(
            tmp.path(),
            &args(&missing)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert!(!r.status.success());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("--metric relative") && err.contains("not in the cache"),
            "{err}"
        );
        assert!(!missing.exists());
    }
}
