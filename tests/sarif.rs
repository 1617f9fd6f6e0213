//! `check --format sarif`: the log validates against the official SARIF 2.1.0 schema (the OASIS
//! schema, draft-07 edition, in tests/fixtures/sarif-schema-2.1.0.json) for adapters with
//! findings of every severity and for a clean one, and carries rules, levels and locations.

mod support;
use lorascope::synth::{self, Damage, DamageKind, Dims, Pattern, Spec};
use serde_json::Value;
use std::path::Path;
use support::lorascope_at_home as run;

const TOY8: Dims = Dims {
    layers: 8,
    experts: 8,
    ..Dims::TOY
};

fn write(dir: &Path, s: &Spec) {
    std::fs::create_dir_all(dir).unwrap();
    let g = synth::generate(s);
    synth::write_safetensors(&dir.join(s.pattern.file_name()), &g.tensors, true).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec(&g.config).unwrap(),
    )
    .unwrap();
}

fn validator() -> jsonschema::Validator {
    let mut schema: Value =
        serde_json::from_str(include_str!("fixtures/sarif-schema-2.1.0.json")).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    // The schema's `language` patterns end in an unmatched `]`, a literal in ECMA-262 that the
    // crate's check of the schema itself refuses; the same pattern with that `]` escaped is put
    // in their place (lorascope writes no `language`). The fixture stays as published.
    fn escape(v: &mut Value) -> usize {
        match v {
            Value::Object(m) => m.values_mut().map(escape).sum(),
            Value::Array(a) => a.iter_mut().map(escape).sum(),
            Value::String(s) if s == "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$" => {
                *s = "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}\\]?$".into();
                1
            }
            _ => 0,
        }
    }
    assert!(escape(&mut schema) >= 1);
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn sarif(home: &Path, args: &[&str]) -> Value {
    let mut a = vec!["check", "--format", "sarif"];
    a.extend_from_slice(args);
    let out = run(home, &a);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_valid(v: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn sarif_of_every_severity_and_of_a_clean_adapter_validates_against_the_schema() {
    let t = tempfile::tempdir().unwrap();
    // error (dead target, vLLM/SGLang refusals of the router), warning (negligible delta),
    // note (imbalance/rank-collapse info, SGLang's unverified LoRA bias).
    let bad = t.path().join("bad adapter");
    let mut s = Spec::new(TOY8, Pattern::AttentionRouter);
    s.damage = vec![
        Damage::new(None, Some("v_proj"), None, DamageKind::Dead),
        Damage::new(Some(2), Some("q_proj"), None, DamageKind::Scale(1e-6)),
    ];
    write(&bad, &s);
    let clean = t.path().join("clean");
    write(&clean, &Spec::new(TOY8, Pattern::Attention));

    let v = sarif(t.path(), &[bad.to_str().unwrap()]);
    assert_valid(&v);
    let run0 = &v["runs"][0];
    let rules = run0["tool"]["driver"]["rules"].as_array().unwrap();
    // Every serving rule and every data code is listed, with a help URI into docs/health.md.
    for r in lorascope::health::serving::all_rules() {
        let d = rules
            .iter()
            .find(|d| d["id"] == r.id)
            .unwrap_or_else(|| panic!("{}", r.id));
        assert!(d["helpUri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("health.md#{}", r.anchor())));
    }
    assert!(rules.iter().any(|d| d["id"] == "dead"));
    let results = run0["results"].as_array().unwrap();
    let levels: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert!(
        levels.contains("error") && levels.contains("warning"),
        "{levels:?}"
    );
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        let uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap();
        assert!(
            uri.ends_with("bad%20adapter/adapter_model.safetensors"),
            "{uri}"
        );
    }
    let dead = results.iter().find(|r| r["ruleId"] == "dead").unwrap();
    assert_eq!(dead["level"], "error");
    assert_eq!(
        dead["locations"][0]["logicalLocations"][0]["name"],
        "v_proj"
    );
    let router = results
        .iter()
        .find(|r| r["ruleId"] == "vllm.modules-to-save")
        .unwrap();
    assert_eq!(router["properties"]["code"], "serve-refused");

    // A note: an info finding (SGLang's unverified LoRA bias) is level "note".
    let note = t.path().join("note");
    std::fs::create_dir_all(&note).unwrap();
    let mut g = synth::generate(&Spec::new(TOY8, Pattern::Attention));
    g.tensors.push(synth::TensorData {
        name: "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias".into(),
        dtype: safetensors::Dtype::F32,
        shape: vec![16],
        bytes: Some(synth::encode(&[0.01; 16], safetensors::Dtype::F32)),
    });
    synth::write_safetensors(&note.join("adapter_model.safetensors"), &g.tensors, true).unwrap();
    std::fs::write(
        note.join("adapter_config.json"),
        serde_json::to_vec(&g.config).unwrap(),
    )
    .unwrap();
    let v = sarif(t.path(), &[note.to_str().unwrap(), "--engine", "sglang"]);
    assert_valid(&v);
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert!(results
        .iter()
        .any(|r| r["ruleId"] == "sglang.lora-bias" && r["level"] == "note"));
    assert!(results
        .iter()
        .all(|r| !r["ruleId"].as_str().unwrap().starts_with("vllm.")));

    // A clean adapter: a valid log with the rules and no result.
    let v = sarif(t.path(), &[clean.to_str().unwrap()]);
    assert_valid(&v);
    assert_eq!(v["runs"][0]["results"].as_array().unwrap().len(), 0);
    assert_eq!(v["version"], "2.1.0");
}

#[test]
fn the_schema_rejects_a_log_without_version_so_the_check_can_fail() {
    let bad = serde_json::json!({"runs": []});
    assert!(!validator().is_valid(&bad));
}
