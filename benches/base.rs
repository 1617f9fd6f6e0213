//! The base-model statistics at real gpt-oss-20b size (issue 12's targets), printed as a table:
//! a synthetic base written by `synth::base::write_base_dir` (MXFP4 experts, all 24 layers, 32
//! experts, random codes, 3 shards and the index, as the release), kept under
//! `target/bench-base/` between runs (a marker file holds the spec: a change rewrites it), and a
//! PEFT per-expert adapter with r = 32 on all 24 layers (1632 deltas, random data):
//! 1. `relative_change` of every delta (‖W‖_F from the MXFP4 bytes, no decode);
//! 2. `amplification` of every delta (each W decoded once, r products with it), and as the
//!    explorer streams it (`compute_streamed`: when the first report and the last delta's
//!    amplification are published);
//! 3. one gate_up delta's intruder dimensions (5760×2880): cold (the dense SVD of W included),
//!    then a second adapter on the same weight through the session cache;
//! 4. peak memory (VmHWM, reset after the set-up) against the mapped files + one layer's decoded
//!    experts + 256 MB.
//!
//! Page cache warm: every file is read once before the timings. Run: `cargo bench --bench base`
//! (the first run writes ~12 GB; figures in docs/performance.md).

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::Adapter;
use lorascope::base::stats::{self as base_stats, Fields, IntruderOpts, Opts, Session};
use lorascope::base::Base;
use lorascope::compute::stats::{Control, Filter};
use lorascope::synth::base::{write_base_dir, BaseSpec, ExpertStorage};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Writes `dir` with `write` unless its marker says it already holds `what` (a spec's Debug).
fn reuse_or_write(dir: &Path, what: &str, write: impl FnOnce(&Path)) {
    let marker = dir.join(".lorascope-bench-spec");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == what) {
        eprintln!("reusing {}", dir.display());
        return;
    }
    eprintln!("writing {} …", dir.display());
    let t = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    write(dir);
    std::fs::write(&marker, what).unwrap();
    eprintln!("  written in {:.0} s", t.elapsed().as_secs_f64());
}

/// The PEFT per-expert adapter: q/k/v/o and packed gate_up/down experts on all 24 layers,
/// r = 32 everywhere, BF16, random data (`seed` makes another adapter on the same weights).
fn adapter_spec(layers: Vec<usize>, seed: u64) -> Spec {
    let mut s = Spec::new(Dims::GPT_OSS_20B, Pattern::PeftExperts { layers });
    s.attn_rank = 32;
    s.expert_rank = 32;
    s.dtype = Dtype::BF16;
    s.seed = seed;
    s
}

fn load(dir: &Path) -> Adapter {
    let mut v = discovery::scan(&ScanRequest {
        cache: None,
        paths: vec![dir.to_path_buf()],
        layout: Default::default(),
    });
    assert_eq!(v.len(), 1, "one adapter in {}", dir.display());
    let a = v.pop().unwrap();
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

/// Reads every file under `dir` once (page cache warm); returns their bytes.
fn warm(dir: &Path) -> u64 {
    let mut total = 0;
    let mut buf = vec![0u8; 8 << 20];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let mut f = std::fs::File::open(&p).unwrap();
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    total
}

/// A line of /proc/self/status in bytes (kB there).
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn session(dir: &Path) -> Session {
    let base = Base::open("bench/gpt-oss-20b", dir).expect("the bench base opens");
    assert!(base.notes.is_empty(), "{:?}", base.notes);
    Session::new(base)
}

const GB: f64 = 1e9;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-base");
    let base_dir = root.join("gpt-oss-20b");
    let mut spec = BaseSpec::new(Dims::GPT_OSS_20B, ExpertStorage::Mxfp4);
    // gpt-oss-20b's release has three shards (model-0000{0,1,2}-of-00002.safetensors).
    spec.shards = 3;
    let what = format!("{spec:?} writer=write_base_dir v1");
    reuse_or_write(&base_dir, &what, |d| {
        write_base_dir(d, &spec).unwrap();
    });
    let (a_dir, b_dir) = (root.join("adapter-a"), root.join("adapter-b"));
    let a_spec = adapter_spec((0..24).collect(), 1);
    reuse_or_write(&a_dir, &format!("{a_spec:?}"), |d| {
        synth::write_adapter(d, &a_spec).unwrap();
    });
    // Another adapter on the same weights (only layer 0 matters for the cached intruder run).
    let b_spec = adapter_spec(vec![0], 2);
    reuse_or_write(&b_dir, &format!("{b_spec:?}"), |d| {
        synth::write_adapter(d, &b_spec).unwrap();
    });
    let t = Instant::now();
    let mapped = warm(&base_dir) + warm(&a_dir) + warm(&b_dir);
    eprintln!(
        "page cache warmed: {:.1} GB read in {:.0} s",
        mapped as f64 / GB,
        t.elapsed().as_secs_f64()
    );
    let (a, b) = (load(&a_dir), load(&b_dir));
    assert_eq!(a.deltas.len(), 1632, "24 × (4 attention + 2 × 32 experts)");
    // The peak from here on: the set-up's is not the statistics'.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let ctl = Control::default();
    let all = Filter::default();
    let mut rows: Vec<(String, f64, String)> = vec![];
    let mut row = |what: String, secs: f64, goal: &str| {
        eprintln!("{what}: {secs:.2} s ({goal})");
        rows.push((what, secs, goal.to_string()));
    };

    let run = |fields: Fields| {
        let s = session(&base_dir);
        let t = Instant::now();
        let opts = Opts { fields, deep: None };
        let rep = base_stats::compute_with(&s, &a, &all, &ctl, opts).unwrap();
        (t.elapsed().as_secs_f64(), rep)
    };
    // BENCH_STEPS=relative,amplification,streamed,intruders runs some of them (for profiling one).
    let steps = std::env::var("BENCH_STEPS").unwrap_or_default();
    let step = |name: &str| steps.is_empty() || steps.split(',').any(|s| s == name);
    if step("relative") {
        let (secs, rep) = run(Fields::Relative);
        let n = rep
            .deltas
            .iter()
            .filter(|d| d.relative_change.is_some())
            .count();
        assert_eq!(n, 1632, "{:?}", rep.notes);
        row(format!("relative_change, all {n} deltas"), secs, "≤ 10 s");
    }
    if step("amplification") {
        let (secs, rep) = run(Fields::Amplification);
        let n = rep
            .deltas
            .iter()
            .filter(|d| d.amplification.is_some())
            .count();
        assert_eq!(n, 1632, "{:?}", rep.notes);
        row(format!("amplification, all {n} deltas"), secs, "≤ 60 s");
    }
    if step("streamed") {
        // The explorer's job: relative change of every delta first, then amplification a layer
        // at a time (then alignment, cancelled here once amplification is complete).
        let s = session(&base_dir);
        let cancel = AtomicBool::new(false);
        let ctl = Control {
            cancel: Some(&cancel),
            ..Control::default()
        };
        let t = Instant::now();
        let (mut first, mut amplified, mut reports) = (None, None, 0);
        let r = base_stats::compute_streamed(&s, &a, &all, &ctl, Fields::All, &mut |rep| {
            let secs = t.elapsed().as_secs_f64();
            reports += 1;
            first.get_or_insert(secs);
            let done = |d: &base_stats::BaseDeltaStats| {
                !d.pending(Fields::Amplification) && d.amplification.is_some()
            };
            if amplified.is_none() && rep.deltas.iter().all(done) {
                amplified = Some(secs);
                cancel.store(true, Ordering::Relaxed);
            }
        });
        assert!(r.is_err(), "cancelled once amplification was complete");
        let (first, amplified) = (
            first.expect("a first report"),
            amplified.expect("amplified"),
        );
        row(
            "streamed: relative change of every delta published".into(),
            first,
            "first report",
        );
        row(
            format!("streamed: amplification of every delta published ({reports} reports)"),
            amplified,
            "≤ 60 s",
        );
    }

    // One gate_up delta at 5760×2880: layer 0, expert 0.
    let one = Filter {
        target: Some("gate_up_proj".into()),
        layer: Some(0),
        expert: Some(0),
    };
    let deep = Opts {
        fields: Fields::Relative,
        deep: Some(IntruderOpts::default()),
    };
    let s = session(&base_dir);
    let intruder_runs = if step("intruders") { 2 } else { 0 };
    for (adapter, label, goal) in [
        (&a, "intruders, one delta, cold (dense SVD of W)", "≤ 30 s"),
        (&b, "intruders, another adapter, same weight", "≤ 2 s"),
    ]
    .into_iter()
    .take(intruder_runs)
    {
        let t = Instant::now();
        let rep = base_stats::compute_with(&s, adapter, &one, &ctl, deep).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(rep.deltas.len(), 1);
        let got = rep.deltas[0].intruders.as_ref().expect("intruders");
        row(
            format!("{label} ({} of k = {})", got.count, got.k),
            secs,
            goal,
        );
    }

    let hwm = status_bytes("VmHWM:");
    let (h, i, e) = (
        Dims::GPT_OSS_20B.hidden,
        Dims::GPT_OSS_20B.inter,
        Dims::GPT_OSS_20B.experts,
    );
    // One layer's experts decoded as f64: gate_up (2I × H) and down (H × I) for each expert.
    let layer = (e * (2 * i * h + h * i) * 8) as u64;
    let budget = mapped + layer + (256 << 20);
    println!();
    println!("| benchmark | time | goal |");
    println!("|---|---|---|");
    for (what, secs, goal) in &rows {
        println!("| {what} | {secs:.2} s | {goal} |");
    }
    println!(
        "| peak memory (VmHWM) | {:.2} GB | ≤ {:.2} GB = mapped files {:.2} + one layer's decoded experts {:.2} + 0.27 |",
        hwm as f64 / GB,
        budget as f64 / GB,
        mapped as f64 / GB,
        layer as f64 / GB
    );
}
