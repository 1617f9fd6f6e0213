//! `stats` and `compare` through the real binary: JSON contracts and failures.

use lorascope::synth::{self, Dims, Pattern, Spec};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg"))
        .env("HF_HUB_CACHE", home.join("empty-hub"))
        .output()
        .unwrap()
}

fn adapter(dir: &Path, pattern: Pattern, seed: u64) -> String {
    let mut s = Spec::new(Dims::TOY, pattern);
    s.seed = seed;
    synth::write_adapter(dir, &s).unwrap();
    dir.display().to_string()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn stats_json_has_the_contract_fields() {
    let t = tempfile::tempdir().unwrap();
    let a = adapter(&t.path().join("a"), Pattern::AttentionRouter, 1);
    let out = run(t.path(), &["stats", &a, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys(&v), ["deltas", "full_tensors", "id"]);
    let d = &v["deltas"][0];
    for f in [
        "layer",
        "target",
        "expert",
        "rank",
        "scale",
        "fro_norm",
        "spectral_norm",
        "effective_rank",
        "stable_rank",
        "numerical_rank",
        "energy_rank_90",
        "energy_rank_99",
        "singular_values",
    ] {
        assert!(d.get(f).is_some(), "missing {f}");
    }
    assert!(d["expert"].is_null());
    assert_eq!(v["deltas"].as_array().unwrap().len(), 4 * Dims::TOY.layers);
    let f = &v["full_tensors"][0];
    assert_eq!(
        keys(f),
        [
            "fro_norm",
            "layer",
            "name",
            "shape",
            "spectral_norm",
            "target"
        ]
    );
    assert_eq!(f["target"], "router");
}

#[test]
fn stats_filters_and_expert_major_switch() {
    let t = tempfile::tempdir().unwrap();
    let a = adapter(
        &t.path().join("a"),
        Pattern::PeftExperts { layers: vec![1] },
        1,
    );
    let out = run(
        t.path(),
        &[
            "stats",
            &a,
            "--json",
            "--target",
            "down_proj",
            "--expert",
            "2",
            "--threads",
            "1",
        ],
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["deltas"].as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0]["layer"].as_u64(), d[0]["expert"].as_u64()),
        (Some(1), Some(2))
    );
    let em = run(
        t.path(),
        &[
            "stats",
            &a,
            "--json",
            "--target",
            "down_proj",
            "--expert",
            "2",
            "--lora-b-layout",
            "expert-major",
        ],
    );
    assert!(em.status.success());
    let w: Value = serde_json::from_slice(&em.stdout).unwrap();
    assert_ne!(w["deltas"][0]["singular_values"], d[0]["singular_values"]);
    let none = run(t.path(), &["stats", &a, "--layer", "99"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no delta matches"));
}

#[test]
fn compare_json_has_the_contract_fields() {
    let t = tempfile::tempdir().unwrap();
    let a = adapter(
        &t.path().join("a"),
        Pattern::PeftExperts { layers: vec![0] },
        1,
    );
    let b = adapter(&t.path().join("b"), Pattern::Attention, 2);
    let out = run(t.path(), &["compare", &a, &b, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys(&v), ["a", "b", "only_a", "only_b", "pairs"]);
    let p = &v["pairs"][0];
    for f in [
        "layer",
        "target",
        "expert",
        "fro_norm_a",
        "fro_norm_b",
        "cosine",
        "subspace_similarity",
    ] {
        assert!(p.get(f).is_some(), "missing {f}");
    }
    assert_eq!(v["pairs"].as_array().unwrap().len(), 4 * Dims::TOY.layers);
    assert_eq!(v["only_a"].as_array().unwrap().len(), 2 * Dims::TOY.experts);
    assert!(v["only_b"].as_array().unwrap().is_empty());
    assert_eq!(keys(&v["only_a"][0]), ["expert", "layer", "target"]);
    let human = run(t.path(), &["compare", &a, &b]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("MEAN COSINE") && text.contains("only in a"),
        "{text}"
    );
}

#[test]
fn corrupt_or_missing_adapters_fail_with_a_message() {
    let t = tempfile::tempdir().unwrap();
    let good = adapter(&t.path().join("good"), Pattern::Attention, 1);
    let bad_dir = t.path().join("bad");
    adapter(&bad_dir, Pattern::Attention, 2);
    let f = bad_dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let bad = bad_dir.display().to_string();
    for args in [
        vec!["stats", bad.as_str()],
        vec!["compare", good.as_str(), bad.as_str()],
        vec!["stats", "nobody/nothing"],
        vec!["compare", "nobody/nothing", good.as_str()],
    ] {
        let out = run(t.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("truncated") || err.contains("no adapter 'nobody/nothing'"),
            "{err}"
        );
        assert!(!err.contains("panicked"));
    }
}
