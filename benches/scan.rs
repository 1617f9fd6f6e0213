//! `discovery::scan` over a hub cache shaped like the survey (docs/survey.md): 140 repos at
//! real gpt-oss-20b shapes, ranks and dtypes (~19 GB apparent size) written as sparse files, so
//! only the headers take disk space. Goal: ≤ 0.3 s. Run with `benches/scan.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::Kind;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

fn bench_scan(c: &mut Criterion) {
    let hub = support::Hub::new();
    let t = Instant::now();
    let repos = lorascope::synth::survey::repos();
    lorascope::synth::survey::write_cache(&hub.root, &repos).expect("survey cache");
    let expected = support::survey_adapters(&repos);
    let gb = support::apparent_size(&hub.root) as f64 / 1e9;
    eprintln!(
        "survey cache: {} repos, {expected} adapters, {gb:.1} GB apparent, written in {:.1?}",
        repos.len(),
        t.elapsed()
    );
    let req = ScanRequest {
        cache: Some(hub.root.clone()),
        ..Default::default()
    };
    // Guard against benchmarking a scan that finds nothing or fails to read the files.
    let found = discovery::scan(&req);
    assert_eq!(found.len(), expected, "adapters found");
    let errors: Vec<_> = found.iter().filter(|a| a.kind == Kind::Error).collect();
    assert!(errors.is_empty(), "scan errors: {:?}", errors[0].error);

    let mut g = c.benchmark_group("scan");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("survey_140_repos_19GB_sparse", |b| {
        b.iter(|| discovery::scan(&req))
    });
    g.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
