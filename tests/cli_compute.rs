//! `stats` and `compare` through the real binary: JSON contracts and failures.

mod support;
use lorascope::synth::{self, Dims, Pattern, Spec};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

use support::lorascope_at_home as run;

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

// ---------------------------------------------------------------------------------------------
// `stats --base`: the base model found in the same cache, and every way it can be missing.

mod base {
    use super::*;
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    use lorascope::synth::Item;

    const DIMS: Dims = Dims {
        layers: 2,
        hidden: 64,
        q_out: 64,
        kv_out: 32,
        experts: 2,
        inter: 32,
    };
    const FIELDS: [&str; 5] = [
        "base_fro_norm",
        "relative_change",
        "relative_spectral",
        "amplification",
        "alignment",
    ];

    /// A hub cache with a PEFT expert adapter that names openai/gpt-oss-20b, and that base
    /// (unless `base` is None).
    fn cache(t: &Path, base: Option<BaseSpec>) -> String {
        let hub = t.join("hub");
        let mut spec = Spec::new(DIMS, Pattern::PeftExperts { layers: vec![0, 1] });
        spec.expert_rank = 2;
        synth::write_hub_repo(
            &hub,
            "me/moe",
            &[Item::Adapter {
                sub: String::new(),
                spec,
            }],
        )
        .unwrap();
        if let Some(b) = base {
            write_base(&hub, "openai/gpt-oss-20b", &b).unwrap();
        }
        hub.display().to_string()
    }

    fn json(out: &Output) -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn stats_base_adds_the_fields_to_every_delta() {
        let t = tempfile::tempdir().unwrap();
        let hub = cache(t.path(), Some(BaseSpec::new(DIMS, ExpertStorage::Mxfp4)));
        let v = json(&run(
            t.path(),
            &["stats", "me/moe", "--cache", &hub, "--json", "--base"],
        ));
        assert_eq!(v["base"]["found"], true);
        assert_eq!(v["base"]["id"], "openai/gpt-oss-20b");
        let ds = v["deltas"].as_array().unwrap();
        assert_eq!(ds.len(), 2 * (4 + 2 * DIMS.experts));
        for d in ds {
            for f in FIELDS {
                let x = d[f]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{f} is {} in {d}", d[f]));
                assert!(x.is_finite() && x >= 0.0, "{f} = {x}");
            }
            let rel = d["fro_norm"].as_f64().unwrap() / d["base_fro_norm"].as_f64().unwrap();
            assert!((d["relative_change"].as_f64().unwrap() - rel).abs() <= 1e-9 * rel);
            assert!(d["alignment"].as_f64().unwrap() <= 1.0);
        }
        // The table shows them too, and names the base.
        let out = run(
            t.path(),
            &[
                "stats",
                "me/moe",
                "--cache",
                &hub,
                "--base",
                "openai/gpt-oss-20b",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        for h in [
            "RELATIVE",
            "AMPLIFICATION",
            "ALIGNMENT",
            "base: openai/gpt-oss-20b",
        ] {
            assert!(text.contains(h), "no {h} in\n{text}");
        }
        // --deep adds intruder dimensions to every delta (the config's base, as --base alone).
        let deep = json(&run(
            t.path(),
            &[
                "stats",
                "me/moe",
                "--cache",
                &hub,
                "--json",
                "--deep",
                "--intruder-k",
                "4",
            ],
        ));
        for d in deep["deltas"].as_array().unwrap() {
            let i = &d["intruders"];
            assert_eq!(i["k"], 4, "{d}");
            assert_eq!(i["epsilon"], 0.5);
            let n = i["count"].as_u64().unwrap();
            assert!(n <= 4 && i["sigma"].as_array().unwrap().len() as u64 == n);
        }
        assert!(
            v["deltas"][0].get("intruders").is_none(),
            "only with --deep"
        );
        // Without --base the JSON is what it always was.
        let plain = json(&run(
            t.path(),
            &["stats", "me/moe", "--cache", &hub, "--json"],
        ));
        assert!(plain.get("base").is_none());
        assert!(plain["deltas"][0].get("relative_change").is_none());
    }

    #[test]
    fn a_missing_base_degrades_to_a_note_and_the_adapters_own_statistics() {
        let t = tempfile::tempdir().unwrap();
        let hub = cache(t.path(), None);
        let plain = run(t.path(), &["stats", "me/moe", "--cache", &hub]);
        let out = run(t.path(), &["stats", "me/moe", "--cache", &hub, "--base"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, plain.stdout, "the table is unchanged");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("openai/gpt-oss-20b is not in the cache"),
            "{err}"
        );
        let v = json(&run(
            t.path(),
            &["stats", "me/moe", "--cache", &hub, "--json", "--base"],
        ));
        assert_eq!(v["base"]["found"], false);
        for f in FIELDS {
            assert!(v["deltas"][0][f].is_null(), "{f}");
        }
    }

    #[test]
    fn a_partial_base_names_the_missing_shard_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let hub = cache(t.path(), Some(BaseSpec::new(DIMS, ExpertStorage::Bf16)));
        // Layer 1 lives in the second shard (gpt-oss names shards from 0, "of" the last id).
        let snap = std::fs::read_dir(Path::new(&hub).join("models--openai--gpt-oss-20b/snapshots"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(snap.join("model-00001-of-00001.safetensors")).unwrap();
        let v = json(&run(
            t.path(),
            &["stats", "me/moe", "--cache", &hub, "--json", "--base"],
        ));
        let notes = v["base"]["notes"].to_string();
        assert!(
            notes.contains("partial") && notes.contains("model-00001-of-00001.safetensors"),
            "{notes}"
        );
        for d in v["deltas"].as_array().unwrap() {
            let present = d["layer"] == 0;
            for f in FIELDS {
                assert_eq!(d[f].is_number(), present, "{f} at {d}");
            }
        }
    }

    #[test]
    fn a_base_of_another_architecture_is_a_note() {
        let t = tempfile::tempdir().unwrap();
        let mut b = BaseSpec::new(DIMS, ExpertStorage::Mxfp4);
        b.model_type = "llama".into();
        let hub = cache(t.path(), Some(b));
        let out = run(t.path(), &["stats", "me/moe", "--cache", &hub, "--base"]);
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is a llama model, not gpt-oss"), "{err}");
    }

    /// The demo cache holds a small base in gpt-oss's own layout (MXFP4 experts, index shards)
    /// and an adapter that names it: `stats --base` works on a fresh machine.
    #[test]
    fn the_demo_base_serves_stats_base_and_deep() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("demo");
        lorascope::synth::demo::write_demo(&dir).unwrap();
        let d = dir.to_str().unwrap();
        let snap = |id: &str| {
            let repo = dir.join(format!("models--{}", id.replace('/', "--")));
            let rev = std::fs::read_to_string(repo.join("refs/main")).unwrap();
            repo.join("snapshots").join(rev.trim())
        };
        let base = snap(lorascope::synth::demo::BASE_ID);
        let index: Value = serde_json::from_slice(
            &std::fs::read(base.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        let map = index["weight_map"].as_object().unwrap();
        for name in [
            "model.layers.0.mlp.experts.gate_up_proj_blocks",
            "model.layers.0.mlp.experts.gate_up_proj_scales",
            "model.layers.5.mlp.experts.down_proj_blocks",
            "model.layers.3.self_attn.q_proj.weight",
            "model.layers.3.mlp.router.weight",
        ] {
            assert!(map.contains_key(name), "no {name} in the demo base");
        }
        let config: Value =
            serde_json::from_slice(&std::fs::read(base.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["quantization_config"]["quant_method"], "mxfp4");

        let id = "lorascope-demo/gpt-oss-mini-moe-peft";
        let v = json(&run(
            t.path(),
            &["stats", id, "--cache", d, "--json", "--base"],
        ));
        assert_eq!(v["base"]["found"], true, "{}", v["base"]);
        assert_eq!(v["base"]["id"], lorascope::synth::demo::BASE_ID);
        let ds = v["deltas"].as_array().unwrap();
        assert!(ds.iter().any(|d| d["expert"].is_u64()), "expert deltas");
        for d in ds {
            for f in FIELDS {
                assert!(d[f].as_f64().is_some_and(f64::is_finite), "{f} in {d}");
            }
        }
        // The intruder dimensions of one expert delta (the explorer's `i`).
        let deep = json(&run(
            t.path(),
            &[
                "stats",
                id,
                "--cache",
                d,
                "--json",
                "--deep",
                "--layer",
                "1",
                "--expert",
                "3",
                "--target",
                "down_proj",
            ],
        ));
        assert_eq!(deep["deltas"].as_array().unwrap().len(), 1);
        assert!(deep["deltas"][0]["intruders"]["count"].is_u64());

        // The demo's merge (its model card names the base) against the base: only the two
        // merged layers' attention and three experts changed.
        let merged = "lorascope-demo/gpt-oss-mini-merged";
        let v = json(&run(
            t.path(),
            &["stats", merged, "--cache", d, "--json", "--base"],
        ));
        assert_eq!(v["base"]["found"], true, "{}", v["base"]);
        let ws = v["merged"]["weights"].as_array().unwrap();
        assert_eq!(v["merged"]["compared"], 6 * (4 + 1 + 2 * 8));
        let changed: Vec<(u64, &str, Option<u64>)> = ws
            .iter()
            .filter(|w| w["fro_norm"].as_f64().unwrap() > 0.0)
            .map(|w| {
                (
                    w["layer"].as_u64().unwrap(),
                    w["target"].as_str().unwrap(),
                    w["expert"].as_u64(),
                )
            })
            .collect();
        assert_eq!(v["merged"]["changed"], changed.len());
        assert_eq!(changed.len(), 2 * (4 + 3 * 2), "{changed:?}");
        assert!(changed.iter().all(|(l, _, _)| [2, 4].contains(l)));
        for w in ws {
            assert_eq!(w["approximate"], false, "256-wide weights get a dense SVD");
            assert!(w["relative_change"].as_f64().unwrap() < 0.2);
        }
        let text = String::from_utf8_lossy(
            &run(t.path(), &["stats", merged, "--cache", d, "--base"]).stdout,
        )
        .to_string();
        assert!(
            text.contains("merged minus base: 20 of 126 weights changed"),
            "{text}"
        );
        // A base that is not there: a note, and the model's own statistics.
        let v = json(&run(
            t.path(),
            &[
                "stats",
                merged,
                "--cache",
                d,
                "--json",
                "--base",
                "nobody/nothing",
            ],
        ));
        assert_eq!(v["base"]["found"], false);
        assert!(v["merged"].is_null() && !v["full_tensors"].as_array().unwrap().is_empty());
    }
}

/// A reader that stops early (`lorascope stats A --json | head`) ends the command quietly, as
/// for text output: exit 0 and nothing on stderr, not "Broken pipe".
#[test]
fn json_into_a_pipe_closed_early_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    let dims = Dims {
        layers: 24,
        experts: 16,
        ..Dims::TOY
    };
    let a = t.path().join("a");
    let spec = Spec::new(
        dims,
        Pattern::PeftExperts {
            layers: (0..24).collect(),
        },
    );
    synth::write_adapter(&a, &spec).unwrap();
    // Far more JSON than a pipe holds (64 KB), read for 10 bytes only.
    let script = r#""$0" stats "$1" --json | head -c 10 > /dev/null; exit "${PIPESTATUS[0]}""#;
    let out = std::process::Command::new("bash")
        .args(["-c", script, env!("CARGO_BIN_EXE_lorascope")])
        .arg(&a)
        .env("HOME", t.path())
        .env("XDG_CACHE_HOME", t.path().join("xdg"))
        .output()
        .unwrap();
    let full = run(t.path(), &["stats", &a.display().to_string(), "--json"]);
    assert!(full.stdout.len() > 1 << 18, "{} bytes", full.stdout.len());
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
