//! Per-delta cost of the factored core at gpt-oss q_proj shape (4096×2880), by rank.
//! cargo bench --bench math

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use faer::Mat;
use lorascope::compute::gram;
use lorascope::compute::tensor::ColMajor;
use lorascope::synth::Rng;

fn factors(out: usize, inn: usize, r: usize) -> (Mat<f64>, Mat<f64>) {
    let mut rng = Rng::new(r as u64);
    let b_t = Mat::from_fn(r, out, |_, _| rng.normal());
    let a_t = Mat::from_fn(inn, r, |_, _| rng.normal());
    (b_t, a_t)
}

fn cols(m: &Mat<f64>) -> ColMajor {
    ColMajor::from_mat(m.as_ref())
}

fn per_delta(c: &mut Criterion) {
    faer::set_global_parallelism(faer::Par::Seq);
    let mut g = c.benchmark_group("factored_delta_4096x2880");
    g.sample_size(10);
    for r in [8usize, 32, 128, 512] {
        let (b_t, a_t) = factors(4096, 2880, r);
        let (b_t, a_t) = (cols(&b_t), cols(&a_t));
        // The clones are plain memcpys, like the one-pass read from the map in `stats`.
        g.bench_with_input(BenchmarkId::from_parameter(r), &r, |bench, _| {
            bench.iter(|| gram::factored(1.0, b_t.clone(), a_t.clone(), false).sigma())
        });
    }
    g.finish();
}

criterion_group!(benches, per_delta);
criterion_main!(benches);
