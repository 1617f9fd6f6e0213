//! `export` end to end (plan, factored truncation, packing, writing, re-reading and verifying):
//! the 1632-delta gpt-oss-20b PEFT per-expert adapter (r = 32 on all 24 layers, attention and
//! all 32 experts of gate_up_proj and down_proj, F32, 1.4 GB written to a temp dir) resized to
//! rank 16, and a toy adapter of the same layout. docs/performance.md has the figures.
//! cargo bench --bench export

use criterion::{criterion_group, criterion_main, Criterion};
use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::stats::Control;
use lorascope::export::{self, Engine, Options, RankRule};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use std::path::Path;

fn load(dir: &Path, spec: &Spec) -> Adapter {
    synth::write_adapter(dir, spec).expect("write adapter");
    let src = discovery::discover_path(dir);
    Adapter::load(&src[0], LayoutOptions::default())
}

fn options(rank: usize) -> Options {
    Options {
        format: lorascope::export::Format::Peft,
        engine: Engine::Peft,
        rank: RankRule::Rank(rank),
        max_rank: None,
        dtype: None,
        drop_unservable: false,
        force: true,
        protected: vec![],
    }
}

fn peft_experts(dims: Dims, layers: usize, rank: usize) -> Spec {
    let mut s = Spec::new(
        dims,
        Pattern::PeftExperts {
            layers: (0..layers).collect(),
        },
    );
    s.attn_rank = rank;
    s.expert_rank = rank;
    s.dtype = Dtype::F32;
    s
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ctl = Control::default();

    let toy = load(
        &tmp.path().join("toy"),
        &peft_experts(Dims::TOY, Dims::TOY.layers, 8),
    );
    let mut g = c.benchmark_group("export_toy_peft_r8_to_4");
    g.sample_size(20);
    let out = tmp.path().join("toy-out");
    g.bench_function("export", |b| {
        b.iter(|| export::export(&toy, &out, &options(4), &ctl).expect("export"))
    });
    g.finish();

    let big = load(
        &tmp.path().join("big"),
        &peft_experts(Dims::GPT_OSS_20B, 24, 32),
    );
    assert_eq!(big.deltas.len(), 1632);
    let mut g = c.benchmark_group("export_peft_r32_f32_1632_deltas_to_16");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(30));
    let out = tmp.path().join("big-out");
    g.bench_function("export", |b| {
        b.iter(|| export::export(&big, &out, &options(16), &ctl).expect("export"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
