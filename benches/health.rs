//! `check` against `stats` (the same single read of every factor, plus the health findings) on
//! the 96-delta attention adapter (r = 32, F32, real gpt-oss-20b shapes), and `check` alone on a
//! 1632-delta PEFT per-expert adapter (r = 32 on all 24 layers, attention and all 32 experts of
//! gate_up_proj and down_proj; random trained factors, about 0.7 GB written to a temp dir).
//! docs/performance.md has the figures.
//! cargo bench --bench health

use criterion::{criterion_group, criterion_main, Criterion};
use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::health;
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use std::path::Path;

fn load(dir: &Path, spec: &Spec) -> Adapter {
    synth::write_adapter(dir, spec).expect("write adapter");
    let src = discovery::discover_path(dir);
    Adapter::load(&src[0], LayoutOptions::default())
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut attn = Spec::new(Dims::GPT_OSS_20B, Pattern::Attention);
    attn.attn_rank = 32;
    attn.dtype = Dtype::F32;
    let a = load(&tmp.path().join("attn"), &attn);
    assert_eq!(a.deltas.len(), 96);
    let ctl = Control::default();
    let mut g = c.benchmark_group("check_vs_stats_attn_r32_f32_96_deltas");
    g.sample_size(20);
    g.bench_function("stats", |b| {
        b.iter(|| stats::compute(&a, &Filter::default(), &ctl).expect("stats"))
    });
    g.bench_function("check", |b| {
        b.iter(|| health::check(&a, &ctl).expect("check"))
    });
    g.finish();

    let mut big = Spec::new(
        Dims::GPT_OSS_20B,
        Pattern::PeftExperts {
            layers: (0..24).collect(),
        },
    );
    big.attn_rank = 32;
    big.expert_rank = 32;
    big.dtype = Dtype::BF16;
    big.sparse = false;
    let b = load(&tmp.path().join("big"), &big);
    assert_eq!(b.deltas.len(), 1632);
    let mut g = c.benchmark_group("check_peft_r32_1632_deltas");
    g.sample_size(10);
    g.bench_function("stats", |x| {
        x.iter(|| stats::compute(&b, &Filter::default(), &ctl).expect("stats"))
    });
    g.bench_function("check", |x| {
        x.iter(|| health::check(&b, &ctl).expect("check"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
