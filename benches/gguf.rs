//! GGUF adapters (issue 25's speed goals). `scan`: the survey cache (140 repos, sparse, real
//! gpt-oss-20b shapes) alone and with a GGUF twin beside every adapter; goal: within 1.2× of the
//! safetensors-only scan. `stats`: one adapter at gpt-oss-20b shapes (2 layers: attention and 32
//! experts' gate/up/down at r = 32) as F32 safetensors (Tinker's 3D layout, its A shared across
//! experts), as F32 GGUF and as Q8_0 GGUF (both with a factor per expert, the llama.cpp layout);
//! goal: Q8_0 within 1.5× of F32. `scan_mirrors`: the survey's attention-only and Tinker
//! adapters as safetensors against the same adapters as GGUF (a cache of each); goal: within
//! 1.2×. cargo bench --bench gguf

use criterion::{criterion_group, criterion_main, Criterion};
use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::gguf::GgmlType;
use lorascope::adapter::{Adapter, Kind};
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::synth::{self, Dims, Pattern, Spec};
use std::time::Duration;

#[path = "../tests/support/mod.rs"]
mod support;

fn bench_scan(c: &mut Criterion) {
    let hub = support::Hub::new();
    let repos = synth::survey::repos();
    synth::survey::write_cache(&hub.root, &repos).expect("survey cache");
    let req = ScanRequest {
        cache: Some(hub.root.clone()),
        ..Default::default()
    };
    let alone = discovery::scan(&req);
    let mut g = c.benchmark_group("gguf_scan");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("survey_safetensors_only", |b| {
        b.iter(|| discovery::scan(&req))
    });
    // A twin beside every LoRA adapter of a repo's root: attention-only or with experts.
    let mut twins = 0;
    for (i, a) in alone.iter().enumerate() {
        if a.kind != Kind::Lora || a.id.matches('/').count() != 1 {
            continue;
        }
        let pattern = if i % 2 == 0 {
            Pattern::Attention
        } else {
            Pattern::Tinker3d
        };
        let mut spec = Spec::new(Dims::GPT_OSS_20B, pattern);
        spec.sparse = true;
        spec.attn_rank = 16;
        spec.expert_rank = 16;
        let dir = a.path.clone();
        synth::gguf::write_adapter(&dir.join("adapter-q8_0.gguf"), &spec, GgmlType::Q8_0)
            .expect("twin");
        twins += 1;
    }
    let with = discovery::scan(&req);
    assert_eq!(with.len(), alone.len() + twins);
    assert!(
        with.iter().filter(|a| a.kind == Kind::Error).count()
            == alone.iter().filter(|a| a.kind == Kind::Error).count()
    );
    eprintln!("{} adapters, {twins} GGUF twins", alone.len());
    g.bench_function("survey_with_gguf_twins", |b| {
        b.iter(|| discovery::scan(&req))
    });
    g.finish();
    bench_mirrors(c, &repos);
}

/// The survey's adapters that a GGUF can mirror delta for delta (attention-only and Tinker's 3D
/// experts: the patterns llama.cpp's names cover in `synth::gguf`), once as safetensors and once
/// as GGUF files with the same specs, in two caches: what a GGUF costs to scan against the
/// safetensors adapter it was converted from.
fn bench_mirrors(c: &mut Criterion, repos: &[synth::survey::SurveyRepo]) {
    use synth::survey::{Item, SurveyRepo};
    let mirrored: Vec<SurveyRepo> = repos
        .iter()
        .map(|r| SurveyRepo {
            id: r.id.clone(),
            row: r.row,
            items: r
                .items
                .iter()
                .filter(|i| {
                    matches!(i, Item::Adapter { spec, .. }
                        if matches!(spec.pattern, Pattern::Attention | Pattern::Tinker3d))
                })
                .cloned()
                .collect(),
        })
        .filter(|r| !r.items.is_empty())
        .collect();
    let st = support::Hub::new();
    synth::survey::write_cache(&st.root, &mirrored).expect("safetensors cache");
    let gg = support::Hub::new();
    for r in &mirrored {
        let stage = gg.stage();
        for item in &r.items {
            if let Item::Adapter { sub, spec } = item {
                let dir = stage.join(sub);
                std::fs::create_dir_all(&dir).expect("folder");
                synth::gguf::write_adapter(&dir.join("adapter.gguf"), spec, GgmlType::F32)
                    .expect("mirror");
            }
        }
        let rev = support::rev(&r.id);
        gg.commit(&r.id, &rev);
        gg.set_ref(&r.id, &rev);
    }
    let req = |root: &std::path::Path| ScanRequest {
        cache: Some(root.to_path_buf()),
        ..Default::default()
    };
    let (rs, rg) = (req(&st.root), req(&gg.root));
    let (a, b) = (discovery::scan(&rs), discovery::scan(&rg));
    let deltas = |v: &[Adapter]| v.iter().map(|a| a.deltas.len()).sum::<usize>();
    assert_eq!(a.len(), b.len());
    assert_eq!(deltas(&a), deltas(&b), "the mirrors hold the same deltas");
    assert!(a.iter().chain(&b).all(|a| a.kind == Kind::Lora));
    eprintln!(
        "{} mirrored adapters, {} deltas each way",
        a.len(),
        deltas(&a)
    );
    let mut g = c.benchmark_group("gguf_scan_mirrors");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("safetensors", |bch| bch.iter(|| discovery::scan(&rs)));
    g.bench_function("gguf_f32_mirrors", |bch| bch.iter(|| discovery::scan(&rg)));
    g.finish();
}

fn load(path: &std::path::Path) -> Adapter {
    let src = discovery::discover_path(path);
    let a = Adapter::load(&src[0], Default::default());
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    a
}

fn bench_stats(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = Spec::new(
        Dims {
            layers: 2,
            ..Dims::GPT_OSS_20B
        },
        Pattern::Tinker3d,
    );
    spec.attn_rank = 32;
    spec.expert_rank = 32;
    spec.alpha = 64.0;
    spec.dtype = safetensors::Dtype::F32;
    synth::write_adapter(&dir.path().join("st"), &spec).expect("safetensors");
    let st = load(&dir.path().join("st"));
    let mut g = c.benchmark_group("gguf_stats_gpt_oss_20b_2_layers_r32");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let run =
        |a: &Adapter| stats::compute(a, &Filter::default(), &Control::default()).expect("stats");
    g.bench_function("safetensors_f32", |b| b.iter(|| run(&st)));
    // The same expert deltas with one A per expert, as the GGUF holds them: mlx-lm's
    // SwitchLinear (whose router LoRA adds one small delta per layer).
    let mut per_expert = spec.clone();
    per_expert.pattern = Pattern::Mlx { layers: 2 };
    synth::write_adapter(&dir.path().join("mlx"), &per_expert).expect("safetensors");
    let mlx = load(&dir.path().join("mlx"));
    assert_eq!(mlx.deltas.len(), st.deltas.len() + 2);
    g.bench_function("safetensors_f32_a_per_expert", |b| b.iter(|| run(&mlx)));
    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let path = dir.path().join(format!("a-{}.gguf", ty.name()));
        synth::gguf::write_adapter(&path, &spec, ty).expect("gguf");
        let a = load(&path);
        assert_eq!(a.deltas.len(), st.deltas.len());
        g.bench_function(format!("gguf_{}", ty.name().to_lowercase()), |b| {
            b.iter(|| run(&a))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_scan, bench_stats);
criterion_main!(benches);
