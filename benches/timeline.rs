//! `lorascope timeline` on a run of 10 checkpoints of a PEFT adapter with experts at gpt-oss-20b
//! shapes (r = 8, attention on 24 layers, the 32 experts of gate_up_proj and down_proj on 5
//! layers: 416 deltas, ~90 MB of F32 per checkpoint, written to a temp dir): the headers read,
//! runs detected and the timeline computed, cold (an empty statistics cache, written as it goes)
//! and warm (every checkpoint's statistics and similarities cached). Goals: ≤ 1.5 s cold,
//! ≤ 0.2 s warm on the 2-core machine. docs/performance.md has the figures.
//! cargo bench --bench timeline

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::compute::stats::{Control, Filter};
use lorascope::run::{self, cache::Cache, timeline};
use lorascope::synth::run::{write_run, Naming, RunSpec, Select};
use lorascope::synth::{Dims, Pattern, Spec};
use safetensors::Dtype;
use std::path::Path;

fn timeline_of(root: &Path, cache: &Path) -> timeline::Timeline {
    let src = discovery::discover_path(root);
    let l = run::load(&src, LayoutOptions::default()).remove(0);
    let c = Some(Cache::new(cache.to_path_buf()));
    timeline::compute(l, &Filter::default(), c, &Control::default()).expect("timeline")
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut spec = Spec::new(
        Dims::GPT_OSS_20B,
        Pattern::PeftExperts {
            layers: vec![0, 7, 11, 15, 23],
        },
    );
    spec.attn_rank = 8;
    spec.expert_rank = 8;
    spec.dtype = Dtype::F32;
    let steps: Vec<u64> = (1..=10).map(|i| i * 100).collect();
    let mut r = RunSpec::new(spec, steps, Naming::Trainer);
    let expert = |e| Select {
        layer: None,
        target: None,
        expert: Some(e),
    };
    r.wake.push((expert(3), 400));
    r.frozen.push(expert(5));
    r.reseed = true;
    let root = tmp.path().join("run");
    write_run(&root, &r).expect("write run");
    let warm = tmp.path().join("warm-cache");
    let t = timeline_of(&root, &warm);
    assert_eq!((t.checkpoints.len(), t.deltas.len()), (10, 416));

    let mut g = c.benchmark_group("timeline_peft_r8_10x416_deltas");
    g.sample_size(10);
    g.bench_function("cold", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("cache dir"),
            |cache| timeline_of(&root, cache.path()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("warm", |b| b.iter(|| timeline_of(&root, &warm)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
