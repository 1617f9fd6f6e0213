//! `plot RUN --kind timeline` (issue 26): a synthetic run drawn by the binary, decoded back and
//! checked where the library says it drew each cell; the line panels' step axis under the
//! heatmap's columns; clear errors; a timeline grid exported as the explorer shows it.

mod support;

use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::compute::stats::{Control, Filter};
use lorascope::plot::{self, GridView, PlotKind, PlotOptions, Rendered};
use lorascope::run::{self, timeline::Timeline};
use lorascope::synth::run::{write_run, Naming, RunSpec};
use lorascope::synth::{Dims, Pattern, Spec};
use lorascope::view::grid::{Measure, StepMetric};
use lorascope::view::timeline as tlgrid;
use std::path::Path;
use support::image::Image;

/// A TOY run (3 layers, attention everywhere, experts on layer 1) at steps 100…400, σ of every
/// delta growing as √((i+1)/4).
fn toy_run(root: &Path) -> RunSpec {
    let spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] });
    let r = RunSpec::new(spec, vec![100, 200, 300, 400], Naming::Trainer);
    write_run(root, &r).unwrap();
    r
}

fn timeline_of(root: &Path) -> Timeline {
    let runs = run::load(&discovery::discover_path(root), LayoutOptions::default());
    assert_eq!(runs.len(), 1);
    run::timeline::compute(
        runs[0].clone(),
        &Filter::default(),
        None,
        &Control::default(),
    )
    .unwrap()
}

fn luminance(p: [u8; 3]) -> f64 {
    0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64
}

/// The light grey of the line panels' grid lines (`plot::spectrum::GRID_MAJOR`).
const GRID: [u8; 3] = [215, 215, 215];

/// How many grid-line pixels image column `x` has below `y0`.
fn grid_pixels(img: &Image, x: i32, y0: i32) -> usize {
    (y0..img.h as i32).filter(|&y| img.px(x, y) == GRID).count()
}

#[test]
fn the_timeline_plot_draws_the_planted_growth_on_one_step_axis() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let r = toy_run(&root);
    let home = tempfile::tempdir().unwrap();
    let out = tmp.path().join("timeline.png");
    let args = [
        "plot",
        root.to_str().unwrap(),
        "--kind",
        "timeline",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = support::lorascope_at_home(home.path(), &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = Image::read(&out);
    assert_eq!((img.w, img.h), (1200, 800));
    img.assert_not_blank();

    // The library draws the same figure: its cells say where each one is.
    let tl = timeline_of(&root);
    let rendered: Rendered =
        plot::render_timeline(&tl, &PlotOptions::new(PlotKind::Timeline)).unwrap();
    assert_eq!(
        rendered.rgb, img.rgb,
        "the binary's PNG is the library's figure"
    );
    let cells = &rendered.cells;
    let steps: Vec<String> = r.steps.iter().map(u64::to_string).collect();
    assert_eq!(cells.len(), 3 * steps.len(), "3 layers × 4 steps");
    for layer in ["0", "1", "2"] {
        let row: Vec<_> = steps
            .iter()
            .map(|s| {
                cells
                    .iter()
                    .find(|c| c.row == layer && c.col == *s)
                    .unwrap()
            })
            .collect();
        let last = row[3].value.unwrap();
        for (i, c) in row.iter().enumerate() {
            // Every delta of the layer grows by the same factor: so does their root-sum-square.
            let want = ((i + 1) as f64 / 4.0).sqrt();
            let got = c.value.unwrap() / last;
            assert!(
                (got - want).abs() < 1e-4,
                "layer {layer} step {i}: {got} vs {want}"
            );
            assert_eq!(img.px(c.x0 + 1, c.y0 + 1), c.fill.unwrap(), "{c:?}");
        }
        // Viridis brightens with the value: the file's colours order as the planted norms.
        for w in row.windows(2) {
            let (a, b) = (
                img.px(w[0].x0 + 1, w[0].y0 + 1),
                img.px(w[1].x0 + 1, w[1].y0 + 1),
            );
            assert!(
                luminance(a) < luminance(b),
                "layer {layer}: {a:?} then {b:?}"
            );
        }
    }
    // The line panels' step grid lines run down each heatmap column's centre, nowhere between.
    let below = cells.iter().map(|c| c.y1).max().unwrap() + 60;
    for c in cells.iter().filter(|c| c.row == "0") {
        let x = (c.x0 + c.x1) / 2;
        let on = grid_pixels(&img, x, below);
        let off = grid_pixels(&img, x + 6, below);
        assert!(
            on > 100 && on > 4 * off,
            "step {}: {on} grid pixels at x {x}, {off} beside",
            c.col
        );
    }

    // 800×600 draws too, to that size.
    let small = tmp.path().join("small.png");
    let o = support::lorascope_at_home(
        home.path(),
        &[
            "plot",
            root.to_str().unwrap(),
            "--kind",
            "timeline",
            "--metric",
            "growth",
            "--layer",
            "1",
            "--target",
            "gate_up_proj",
            "--width",
            "800",
            "--height",
            "600",
            "--out",
            small.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = Image::read(&small);
    assert_eq!((img.w, img.h), (800, 600));
}

#[test]
fn timeline_plots_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    toy_run(&root);
    let adapter = root.join("checkpoint-100");
    let home = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let run = root.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &[adapter.to_str().unwrap(), "--kind", "timeline"],
            "no training run",
        ),
        (
            &[run, "--kind", "timeline", "--metric", "srank"],
            "a timeline shows",
        ),
        (
            &[
                adapter.to_str().unwrap(),
                "--kind",
                "layers",
                "--metric",
                "e99",
            ],
            "for --kind timeline only",
        ),
        (
            &[run, "--kind", "timeline", "--layer", "9"],
            "no delta at layer 9 (layers: 0",
        ),
        (
            &[run, "--kind", "timeline", "--target", "nope"],
            "no delta with target nope",
        ),
        (
            &[run, "--kind", "timeline", "--compare", run],
            "no --compare",
        ),
    ];
    for (args, msg) in cases {
        let mut all = vec!["plot"];
        all.extend_from_slice(args);
        all.extend(["--out", out.to_str().unwrap()]);
        let o = support::lorascope_at_home(home.path(), &all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(err.contains(msg), "{all:?}: {err}");
        assert!(!out.exists(), "{all:?} wrote a file");
    }
}

#[test]
fn unreadable_checkpoints_and_the_explorers_grids_draw() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    toy_run(&root);
    std::fs::write(
        root.join("checkpoint-200/adapter_model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let tl = timeline_of(&root);
    assert!(tl.checkpoints[1].error.is_some());
    let r = plot::render_timeline(&tl, &PlotOptions::new(PlotKind::Timeline)).unwrap();
    // The unreadable step's column is there, empty (hatched), tagged.
    let col: Vec<_> = r
        .cells
        .iter()
        .filter(|c| c.col == "200 unreadable")
        .collect();
    assert_eq!(col.len(), 3);
    assert!(col.iter().all(|c| c.fill.is_none() && c.value.is_none()));

    // The Run screen's `p`: an experts × steps grid exported as shown, on its own scale.
    let g = tlgrid::expert_step_grid(&tl, Some(1), "gate_up_proj");
    let measure = Measure::Step(StepMetric::Growth);
    let view = GridView {
        grid: &g,
        measure,
        id: &tl.run,
        compare_id: None,
        kind: PlotKind::Timeline,
        target: Some("gate_up_proj"),
        row_title: "expert",
        col_title: "step",
    };
    let dir = tempfile::tempdir().unwrap();
    let (path, drawn) = plot::export_grid(&view, dir.path()).unwrap();
    assert!(
        path.to_str()
            .unwrap()
            .ends_with("-timeline-gate_up_proj-growth.png"),
        "{path:?}"
    );
    let img = Image::read(&path);
    let scale = measure.scale(&[&g]).unwrap();
    let mut values = 0;
    for c in &drawn.cells {
        if let Some(v) = c.value {
            assert_eq!(c.fill, Some(scale.color(v)), "{c:?}");
            assert_eq!(img.px(c.x0 + 1, c.y0 + 1), scale.color(v));
            values += 1;
        }
    }
    // 4 experts × steps 300 and 400 (100 has no previous, 200 is unreadable).
    assert_eq!(values, 8);
}
