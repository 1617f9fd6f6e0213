//! Time to write each plot once the statistics are known, for an adapter with gpt-oss-20b's full
//! layout at its real shapes: 24 layers × q/k/v/o (r = 16) plus PEFT expert LoRA on gate_up_proj
//! and down_proj of all 32 experts on every layer (r = 4): 96 + 1536 = 1632 deltas.
//! cargo bench --bench plot

use criterion::{criterion_group, criterion_main, Criterion};
use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::compare;
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::plot::{self, CompareWith, PlotKind, PlotOptions};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;

fn plots(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut spec = Spec::new(
        Dims::GPT_OSS_20B,
        Pattern::PeftExperts {
            layers: (0..24).collect(),
        },
    );
    spec.attn_rank = 16;
    spec.expert_rank = 4;
    spec.dtype = Dtype::BF16;
    let dir = tmp.path().join("adapter");
    synth::write_adapter(&dir, &spec).expect("write adapter");
    let src = discovery::discover_path(&dir);
    let a = Adapter::load(&src[0], LayoutOptions::default());
    let st = stats::compute(&a, &Filter::default(), &Control::default()).expect("stats");
    assert_eq!(st.deltas.len(), 96 + 24 * 2 * 32);
    // Compared with itself: the drawing cost does not depend on the cosines' values.
    let cmp = compare::compare(&a, &a, &Control::default()).expect("compare");
    let with = CompareWith {
        stats: &st,
        comparison: &cmp,
    };
    let out = tmp.path().join("plot.png");
    let mut g = c.benchmark_group("plot_gpt_oss_1632_deltas");
    g.sample_size(10);
    let opts = |kind, target: Option<&str>, layer| PlotOptions {
        target: target.map(String::from),
        layer,
        ..PlotOptions::new(kind)
    };
    let cases = [
        ("layers", opts(PlotKind::Layers, None, None), false),
        ("experts", opts(PlotKind::Experts, None, None), false),
        ("spectrum", opts(PlotKind::Spectrum, None, None), false),
        (
            "spectrum_per_layer",
            opts(PlotKind::Spectrum, Some("down_proj"), None),
            false,
        ),
        (
            "spectrum_per_expert",
            opts(PlotKind::Spectrum, Some("gate_up_proj"), Some(7)),
            false,
        ),
        ("compare_layers", opts(PlotKind::Layers, None, None), true),
        ("compare_experts", opts(PlotKind::Experts, None, None), true),
        (
            "compare_spectrum",
            opts(PlotKind::Spectrum, None, None),
            true,
        ),
    ];
    for (name, o, compare) in cases {
        let with = compare.then_some(with);
        g.bench_function(name, |b| {
            b.iter(|| plot::write_png(&st, with, &o, &out).expect("plot"))
        });
    }
    g.finish();
}

criterion_group!(benches, plots);
criterion_main!(benches);
