//! Health findings (`lorascope::health`) on synthetic fixtures with planted defects: each finding
//! at its place, a healthy twin raising none, every layout, every float dtype; one test per
//! serving rule (its upstream source is named in the rule and in docs/health.md); `check` exit
//! codes and JSON through the binary.

mod support;
use lorascope::adapter::discovery;
use lorascope::compute::stats::Control;
use lorascope::health::{self, code, Finding, Health, Severity, Verdict};
use lorascope::synth::{self, Damage, DamageKind, Dims, Generated, Pattern, Spec, TensorData};
use lorascope::Adapter;
use safetensors::Dtype;
use serde_json::Value;
use std::path::Path;

/// Enough layers and experts for robust z-scores (groups of at least 5), still tiny.
const TOY8: Dims = Dims {
    layers: 8,
    experts: 8,
    ..Dims::TOY
};

/// Wide enough for ranks above 8 on every attention projection.
const WIDE: Dims = Dims {
    hidden: 32,
    q_out: 32,
    kv_out: 32,
    ..TOY8
};

fn spec(pattern: Pattern) -> Spec {
    Spec::new(TOY8, pattern)
}

/// gpt-oss-20b's real matrix shapes (2880 hidden, 4096/512 attention, 5760/2880 experts), with
/// 8 layers and 8 experts so that the fixtures stay small.
const GPT8: Dims = Dims {
    layers: 8,
    experts: 8,
    ..Dims::GPT_OSS_20B
};

/// Every finding is planted at toy sizes and at gpt-oss shapes.
const SHAPES: [(&str, Dims); 2] = [("toy", TOY8), ("gpt-oss", GPT8)];

fn spec_in(dims: Dims, pattern: Pattern) -> Spec {
    Spec::new(dims, pattern)
}

/// Wide enough for ranks above 8 (gpt-oss shapes already are).
fn wide(dims: Dims) -> Dims {
    if dims.hidden >= 32 {
        dims
    } else {
        WIDE
    }
}

fn damaged(mut s: Spec, d: Vec<Damage>) -> Spec {
    s.damage = d;
    s
}

fn dmg(
    layer: Option<usize>,
    target: Option<&'static str>,
    expert: Option<usize>,
    kind: DamageKind,
) -> Damage {
    Damage::new(layer, target, expert, kind)
}

fn load(dir: &Path) -> Adapter {
    let src = discovery::discover_path(dir);
    Adapter::load(&src[0], Default::default())
}

/// Writes the adapter of `s` after `edit` changed its tensors or config, and loads it.
fn write_with(dir: &Path, s: &Spec, edit: impl FnOnce(&mut Generated)) -> Adapter {
    std::fs::create_dir_all(dir).unwrap();
    let mut g = synth::generate(s);
    edit(&mut g);
    synth::write_safetensors(&dir.join(s.pattern.file_name()), &g.tensors, true).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec(&g.config).unwrap(),
    )
    .unwrap();
    load(dir)
}

fn write(dir: &Path, s: &Spec) -> Adapter {
    write_with(dir, s, |_| {})
}

fn check(a: &Adapter) -> Health {
    assert!(a.error.is_none(), "{:?}", a.error);
    health::check(a, &Control::default()).unwrap()
}

fn of<'a>(h: &'a Health, code: &str) -> Vec<&'a Finding> {
    h.findings.iter().filter(|f| f.code == code).collect()
}

fn only(h: &Health, code: &str) -> Finding {
    let f = of(h, code);
    assert_eq!(f.len(), 1, "one {code} finding expected: {:#?}", h.findings);
    f[0].clone()
}

fn at(f: &Finding) -> (Option<usize>, Option<&str>, Option<usize>) {
    (f.layer, f.target.as_deref(), f.expert)
}

fn assert_healthy(h: &Health) {
    assert!(h.findings.is_empty(), "{}: {:#?}", h.id, h.findings);
}

// ---------------------------------------------------------------------------------------------
// Healthy twins

#[test]
fn healthy_adapters_of_every_layout_raise_no_finding() {
    let t = tempfile::tempdir().unwrap();
    let patterns = [
        Pattern::Attention,
        Pattern::AttentionRouter,
        Pattern::PeftExperts {
            layers: (0..8).collect(),
        },
        Pattern::Tinker3d,
        Pattern::UnslothExperts { layers: vec![1, 5] },
        Pattern::Mlx { layers: 6 },
    ];
    for (i, p) in patterns.into_iter().enumerate() {
        let a = write(&t.path().join(i.to_string()), &spec(p.clone()));
        let h = check(&a);
        assert_healthy(&h);
        assert!(!h.rank_advice.is_empty(), "{p:?}");
    }
}

fn gpt_oss_peft(seed: u64) -> Spec {
    let mut s = Spec::new(
        Dims {
            layers: 6,
            ..Dims::GPT_OSS_20B
        },
        Pattern::PeftExperts { layers: vec![1, 4] },
    );
    s.attn_rank = 4;
    s.expert_rank = 2;
    s.dtype = Dtype::BF16;
    s.seed = seed;
    s
}

#[test]
fn gpt_oss_shaped_dead_and_nan_experts_are_found_and_the_twin_is_healthy() {
    let t = tempfile::tempdir().unwrap();
    assert_healthy(&check(&write(&t.path().join("ok"), &gpt_oss_peft(3))));
    let bad = damaged(
        gpt_oss_peft(3),
        vec![
            dmg(Some(4), Some("gate_up_proj"), None, DamageKind::Dead),
            dmg(Some(1), Some("down_proj"), Some(5), DamageKind::NonFinite),
        ],
    );
    let h = check(&write(&t.path().join("bad"), &bad));
    let d = only(&h, code::DEAD);
    assert_eq!(at(&d), (Some(4), Some("gate_up_proj"), None));
    assert_eq!(d.severity, Severity::Error);
    assert!(d.message.contains("all 32 experts"), "{}", d.message);
    let n = only(&h, code::NON_FINITE);
    assert_eq!(at(&n), (Some(1), Some("down_proj"), Some(5)));
    // One column of B (2880 rows) of expert 5 is NaN.
    assert_eq!(n.value, Some(2880.0));
    assert_eq!(h.verdict, Verdict::Error);
}

// ---------------------------------------------------------------------------------------------
// non-finite

#[test]
fn nan_is_found_in_bf16_f16_and_f32_data() {
    let t = tempfile::tempdir().unwrap();
    for dt in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        let mut s = damaged(
            spec(Pattern::Attention),
            vec![dmg(Some(2), Some("v_proj"), None, DamageKind::NonFinite)],
        );
        s.dtype = dt;
        let h = check(&write(&t.path().join(format!("{dt:?}")), &s));
        let f = only(&h, code::NON_FINITE);
        assert_eq!(at(&f), (Some(2), Some("v_proj"), None), "{dt:?}");
        assert_eq!(f.severity, Severity::Error);
        // v_proj's B is 8 × 4: its first column (8 values) is NaN.
        assert_eq!(f.value, Some(8.0), "{dt:?}");
        assert!(f.message.contains("B has 8 NaN/inf"), "{}", f.message);
        // Nothing else is computed from the garbage.
        assert_eq!(h.findings.len(), 1, "{dt:?}: {:#?}", h.findings);
    }
}

#[test]
fn a_nan_in_a_full_tensor_is_non_finite() {
    let t = tempfile::tempdir().unwrap();
    let a = write_with(&t.path().join("r"), &spec(Pattern::AttentionRouter), |g| {
        let w = g
            .tensors
            .iter_mut()
            .find(|x| x.name.ends_with("layers.3.mlp.router.weight"))
            .unwrap();
        let n: usize = w.shape.iter().product();
        let mut v = vec![0.01; n];
        v[5] = f64::INFINITY;
        w.bytes = Some(synth::encode(&v, w.dtype));
    });
    let f = only(&check(&a), code::NON_FINITE);
    assert_eq!(at(&f), (Some(3), Some("router"), None));
}

// ---------------------------------------------------------------------------------------------
// what is not a LoRA adapter gets no "ok" it did not earn

#[test]
fn empty_unreadable_checkpoint_only_and_merged_say_what_they_are_and_serving_does_not_apply() {
    let t = tempfile::tempdir().unwrap();
    let empty = write(&t.path().join("empty"), &spec(Pattern::Empty));
    let merged = write(
        &t.path().join("merged"),
        &spec(Pattern::FullWeights { layers: vec![1, 2] }),
    );
    let ckpt = t.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("adapter_config.json"), b"{}").unwrap();
    std::fs::write(ckpt.join("adapter_model.bin"), b"not read").unwrap();
    let ckpt = load(&ckpt);
    let bad = t.path().join("bad");
    write(&bad, &spec(Pattern::Attention));
    std::fs::write(
        bad.join("adapter_model.safetensors"),
        b"\x08\0\0\0\0\0\0\0{}",
    )
    .unwrap();
    let bad = load(&bad);
    let cases = [
        (&empty, code::EMPTY, Severity::Error, Verdict::Error),
        (
            &ckpt,
            code::NOT_CHECKED,
            Severity::Warning,
            Verdict::Warning,
        ),
        (&bad, code::UNREADABLE, Severity::Error, Verdict::Error),
        (&merged, code::NOT_LORA, Severity::Info, Verdict::Ok),
    ];
    for (a, c, sev, verdict) in cases {
        let h = health::check(a, &Control::default()).unwrap();
        let f = only(&h, c);
        assert_eq!((f.severity, h.verdict), (sev, verdict), "{}: {h:#?}", a.id);
        for e in [&h.serving.vllm, &h.serving.sglang] {
            assert!(!e.applies && e.findings.is_empty(), "{}: {e:?}", a.id);
            assert_eq!(e.label().1, "not applicable");
        }
    }
    // A LoRA adapter is judged by both engines.
    let lora = check(&write(&t.path().join("lora"), &spec(Pattern::Attention)));
    assert!(lora.serving.vllm.applies && lora.serving.sglang.applies);
    // Merged weights are still checked for NaN (the only data finding that applies to them).
    let nan = write_with(
        &t.path().join("merged-nan"),
        &spec(Pattern::FullWeights { layers: vec![1] }),
        |g| {
            let w = g
                .tensors
                .iter_mut()
                .find(|x| x.name.contains("router.weight"))
                .unwrap();
            let n: usize = w.shape.iter().product();
            let mut v = vec![0.01; n];
            v[0] = f64::NAN;
            w.bytes = Some(synth::encode(&v, w.dtype));
        },
    );
    let h = check(&nan);
    assert_eq!(h.verdict, Verdict::Error);
    assert_eq!(of(&h, code::NON_FINITE).len(), 1, "{:#?}", h.findings);
    assert_eq!(h.findings[0].code, code::NON_FINITE, "errors come first");
}

#[test]
fn a_base_model_with_mxfp4_experts_is_checked_on_its_float_tensors() {
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    let t = tempfile::tempdir().unwrap();
    let dims = Dims::TOY_MXFP4;
    write_base(
        t.path(),
        "org/base",
        &BaseSpec::new(dims, ExpertStorage::Mxfp4),
    )
    .unwrap();
    let src = discovery::discover_cache(t.path());
    let a = Adapter::load(&src[0], Default::default());
    assert!(
        a.tensors.iter().any(|t| t.info.dtype == Dtype::U8),
        "MXFP4 blocks"
    );
    // U8 blocks and scales were a failed check ("has dtype U8"): they are listed, not measured.
    let h = health::check(&a, &Control::default()).unwrap();
    assert_eq!(h.verdict, Verdict::Ok, "{:#?}", h.findings);
    assert_eq!(only(&h, code::NOT_LORA).severity, Severity::Info);
}

// ---------------------------------------------------------------------------------------------
// dead, in every expert layout

#[test]
fn a_dead_expert_target_is_one_error_in_peft_packed_unsloth_and_tinker_layouts() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let cases = [
            (
                Pattern::PeftExperts {
                    layers: (0..8).collect(),
                },
                "gate_up_proj",
                64,
            ),
            (
                Pattern::UnslothExperts { layers: vec![1, 5] },
                "gate_up_proj",
                16,
            ),
            // Tinker's down_proj shares B: σ lives in A, which is the dead factor here.
            (Pattern::Tinker3d, "down_proj", 64),
        ];
        for (i, (p, target, n)) in cases.into_iter().enumerate() {
            let s = damaged(
                spec_in(dims, p.clone()),
                vec![dmg(None, Some(target), None, DamageKind::Dead)],
            );
            let h = check(&write(&t.join(i.to_string()), &s));
            let f = only(&h, code::DEAD);
            assert_eq!(at(&f), (None, Some(target), None), "{p:?}");
            assert_eq!(f.severity, Severity::Error, "{p:?}");
            assert!(
                f.message
                    .contains(&format!("experts of {target}: {n} of {n} deltas are zero")),
                "{p:?}: {}",
                f.message
            );
            assert_eq!(h.findings.len(), 1, "{p:?}: {:#?}", h.findings);
        }
    }
}

#[test]
fn a_single_dead_delta_is_a_warning_at_its_place() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let s = damaged(
            spec_in(
                dims,
                Pattern::PeftExperts {
                    layers: (0..8).collect(),
                },
            ),
            vec![dmg(Some(6), Some("down_proj"), Some(2), DamageKind::Dead)],
        );
        let h = check(&write(t.as_path(), &s));
        let f = only(&h, code::DEAD);
        assert_eq!(at(&f), (Some(6), Some("down_proj"), Some(2)));
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.message.contains("B is exactly zero"), "{}", f.message);
    }
}

// ---------------------------------------------------------------------------------------------
// negligible, outlier, imbalance, rank-collapse

#[test]
fn a_negligible_delta_is_a_warning_and_not_an_outlier() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let s = damaged(
            spec_in(dims, Pattern::Attention),
            vec![dmg(Some(2), Some("q_proj"), None, DamageKind::Scale(1e-6))],
        );
        let h = check(&write(t.as_path(), &s));
        let f = only(&h, code::NEGLIGIBLE);
        assert_eq!(at(&f), (Some(2), Some("q_proj"), None));
        assert_eq!(h.findings.len(), 1, "{:#?}", h.findings);
    }
}

#[test]
fn outliers_over_layers_and_over_experts_are_warnings_with_the_group_median() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let s = damaged(
            spec_in(dims, Pattern::Attention),
            vec![dmg(Some(4), Some("k_proj"), None, DamageKind::Scale(50.0))],
        );
        let h = check(&write(&t.join("a"), &s));
        let f = only(&h, code::OUTLIER);
        assert_eq!(at(&f), (Some(4), Some("k_proj"), None));
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.message.contains("k_proj over layers"), "{}", f.message);
        assert_eq!(h.findings.len(), 1, "{:#?}", h.findings);

        let s = damaged(
            spec_in(
                dims,
                Pattern::PeftExperts {
                    layers: (0..8).collect(),
                },
            ),
            vec![dmg(
                Some(2),
                Some("gate_up_proj"),
                Some(3),
                DamageKind::Scale(50.0),
            )],
        );
        let h = check(&write(&t.join("e"), &s));
        let f = only(&h, code::OUTLIER);
        assert_eq!(at(&f), (Some(2), Some("gate_up_proj"), Some(3)));
        assert!(f.value.unwrap() > 0.0);
    }
}

#[test]
fn unbalanced_factors_of_an_unchanged_delta_are_imbalance_info_only() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let s = damaged(
            spec_in(dims, Pattern::Attention),
            vec![dmg(
                Some(3),
                Some("v_proj"),
                None,
                DamageKind::Imbalance(1e3),
            )],
        );
        let h = check(&write(t.as_path(), &s));
        let f = only(&h, code::IMBALANCE);
        assert_eq!(at(&f), (Some(3), Some("v_proj"), None));
        assert_eq!(f.severity, Severity::Info);
        // ΔW is the same: no outlier, and the verdict stays ok.
        assert_eq!(h.findings.len(), 1, "{:#?}", h.findings);
        assert_eq!(h.verdict, Verdict::Ok);
    }
}

#[test]
fn unused_rank_is_rank_collapse_with_the_rank_that_keeps_99_percent() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let mut s = damaged(
            Spec::new(wide(dims), Pattern::Attention),
            vec![dmg(None, Some("o_proj"), None, DamageKind::Collapse(2))],
        );
        s.attn_rank = 12;
        let h = check(&write(t.as_path(), &s));
        let f = only(&h, code::RANK_COLLAPSE);
        assert_eq!(at(&f), (None, Some("o_proj"), None));
        assert_eq!(f.severity, Severity::Info);
        let adv = h.rank_advice.iter().find(|r| r.target == "o_proj").unwrap();
        assert_eq!((adv.rank, adv.rank_99), (12, 2));
        assert!(f.message.contains("rank 2 keeps 99 %"), "{}", f.message);
        assert_eq!(h.findings.len(), 1, "{:#?}", h.findings);
    }
}

// ---------------------------------------------------------------------------------------------
// coverage

fn drop_tensors(g: &mut Generated, pat: &str) {
    g.tensors.retain(|t: &TensorData| !t.name.contains(pat));
}

#[test]
fn experts_missing_in_a_layer_are_coverage_warnings() {
    for (tag, dims) in SHAPES {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let a = write_with(
            t.as_path(),
            &spec_in(dims, Pattern::UnslothExperts { layers: vec![1, 5] }),
            |g| drop_tensors(g, "layers.5.mlp.experts.gate_up_projs.3."),
        );
        let h = check(&a);
        let f = only(&h, code::COVERAGE);
        assert_eq!(at(&f), (Some(5), Some("gate_up_proj"), Some(3)));
        assert!(
            f.message.contains("1 of 8 experts have no LoRA (3)"),
            "{}",
            f.message
        );
    }
}

#[test]
fn a_config_target_that_matched_no_tensor_is_coverage_as_in_unsloth_zoo_pr_909() {
    for (tag, dims) in SHAPES {
        // unsloth-zoo PR 909: the run targeted expert modules, the saved adapter has only attention.
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join(tag);
        let a = write_with(&t.join("m"), &spec_in(dims, Pattern::Attention), |g| {
            g.config["target_modules"] =
                serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]);
        });
        let f = only(&check(&a), code::COVERAGE);
        assert!(
            f.message.contains("'gate_proj' matched no tensor"),
            "{}",
            f.message
        );

        let a = write_with(
            &t.join("p"),
            &spec_in(dims, Pattern::PeftExperts { layers: vec![2] }),
            |g| {
                g.config["target_parameters"]
                    .as_array_mut()
                    .unwrap()
                    .push("6.mlp.experts.gate_up_proj".into());
            },
        );
        let f = only(&check(&a), code::COVERAGE);
        assert!(
            f.message
                .contains("'6.mlp.experts.gate_up_proj' matched no tensor"),
            "{}",
            f.message
        );
    }
}

#[test]
fn deltas_the_config_does_not_list_are_coverage() {
    let t = tempfile::tempdir().unwrap();
    let a = write_with(t.path(), &spec(Pattern::Attention), |g| {
        g.config["target_modules"] = serde_json::json!(["q_proj", "k_proj", "v_proj"]);
    });
    let f = only(&check(&a), code::COVERAGE);
    assert!(
        f.message.starts_with("8 deltas on modules"),
        "{}",
        f.message
    );
    assert_eq!(f.target.as_deref(), Some("o_proj"));
}

/// Issue 23: a module whose pair is broken is one `incomplete-pair` error naming the module and
/// why; every other delta is still checked (a dead one elsewhere is still found).
#[test]
fn an_incomplete_pair_is_an_error_naming_its_module_and_the_rest_is_checked() {
    let cases = [
        (DamageKind::MissingB, "lora_A without lora_B"),
        (DamageKind::MissingA, "lora_B without lora_A"),
        (
            DamageKind::RankMismatch,
            "ranks disagree (lora_A has 5 rows but lora_B has 4 columns)",
        ),
    ];
    for (shape, dims) in SHAPES {
        for (kind, why) in cases {
            let t = tempfile::tempdir().unwrap();
            let twin = spec_in(dims, Pattern::Attention);
            let dead = dmg(Some(5), Some("v_proj"), None, DamageKind::Dead);
            let broken = damaged(
                twin.clone(),
                vec![dmg(Some(3), Some("k_proj"), None, kind), dead.clone()],
            );
            let h = check(&write(&t.path().join("broken"), &broken));
            let f = only(&h, code::INCOMPLETE_PAIR);
            assert_eq!(
                (f.severity, at(&f)),
                (Severity::Error, (Some(3), Some("k_proj"), None))
            );
            assert!(
                f.message.contains("module model.layers.3.self_attn.k_proj")
                    && f.message.contains(why),
                "{shape}: {}",
                f.message
            );
            assert_eq!(h.verdict, Verdict::Error);
            assert_eq!(
                at(&only(&h, code::DEAD)),
                (Some(5), Some("v_proj"), None),
                "{shape}"
            );
            // The twin with only the dead delta: no incomplete pair.
            let h = check(&write(&t.path().join("twin"), &damaged(twin, vec![dead])));
            assert!(of(&h, code::INCOMPLETE_PAIR).is_empty(), "{shape}");
        }
    }
    // A target whose every module is incomplete was still saved: not a coverage warning.
    let t = tempfile::tempdir().unwrap();
    let all_v = dmg(None, Some("v_proj"), None, DamageKind::MissingB);
    let spec = damaged(spec_in(Dims::TOY, Pattern::Attention), vec![all_v]);
    let h = check(&write(t.path(), &spec));
    assert!(!of(&h, code::INCOMPLETE_PAIR).is_empty());
    assert!(
        of(&h, code::COVERAGE)
            .iter()
            .all(|f| !f.message.contains("v_proj")),
        "{:?}",
        of(&h, code::COVERAGE)
    );
}

/// A packed expert pair, a module-list expert and a 3D pair broken: each named once, at its place.
#[test]
fn incomplete_expert_pairs_are_named_in_packed_module_list_and_3d_layouts() {
    let cases = [
        (
            Pattern::PeftExperts { layers: vec![2, 5] },
            Some(5),
            None,
            "model.layers.5.mlp.experts",
        ),
        (
            Pattern::UnslothExperts { layers: vec![2] },
            Some(2),
            Some(6),
            "model.layers.2.mlp.experts.down_projs.6",
        ),
        (
            Pattern::Tinker3d,
            Some(4),
            None,
            "model.layers.4.mlp.experts.w2",
        ),
    ];
    for (pattern, layer, expert, module) in cases {
        let t = tempfile::tempdir().unwrap();
        let s = damaged(
            spec(pattern.clone()),
            vec![dmg(
                layer,
                Some("down_proj"),
                expert.or(Some(1)),
                DamageKind::RankMismatch,
            )],
        );
        let h = check(&write(t.path(), &s));
        let f = only(&h, code::INCOMPLETE_PAIR);
        assert_eq!(at(&f), (layer, Some("down_proj"), expert), "{pattern:?}");
        assert!(
            f.message
                .contains(&format!("module {module}: ranks disagree")),
            "{pattern:?}: {}",
            f.message
        );
    }
}

/// Through the binary: the text names the module under `errors`, `--json` carries the finding;
/// an adapter whose only module is incomplete (nothing to measure) is checked too.
#[test]
fn check_text_and_json_name_the_incomplete_module() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("orphan");
    let s = damaged(
        spec(Pattern::PeftExperts { layers: vec![2] }),
        vec![dmg(
            Some(2),
            Some("gate_up_proj"),
            None,
            DamageKind::MissingB,
        )],
    );
    write(&dir, &s);
    let only_orphan = t.path().join("only-orphan");
    std::fs::create_dir_all(&only_orphan).unwrap();
    let lone = tensor(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        vec![4, 12],
    );
    synth::write_safetensors(
        &only_orphan.join("adapter_model.safetensors"),
        &[lone],
        true,
    )
    .unwrap();
    let (d, o) = (dir.to_str().unwrap(), only_orphan.to_str().unwrap());
    let out = run(t.path(), &["check", d]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    let errors = text.split("  errors\n").nth(1).unwrap_or("");
    assert!(
        errors
            .lines()
            .next()
            .is_some_and(|l| l.trim_start().starts_with("incomplete-pair")
                && l.contains(
                    "module model.layers.2.mlp.experts.base_layer: lora_A without lora_B"
                )),
        "{text}"
    );
    let out = run(t.path(), &["check", d, o, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = |h: &Value| -> Vec<(String, Value, Value)> {
        h["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "incomplete-pair")
            .map(|f| {
                (
                    f["severity"].as_str().unwrap().into(),
                    f["layer"].clone(),
                    f["target"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        found(&v[0]),
        [("error".to_string(), 2.into(), "gate_up_proj".into())]
    );
    assert_eq!(
        found(&v[1]),
        [("error".to_string(), 0.into(), "q_proj".into())]
    );
    assert_eq!(v[1]["verdict"], "error");
}

// ---------------------------------------------------------------------------------------------
// Serving rules: one test per rule; each rule's `source` names the upstream file.

fn rule<'a>(h: &'a Health, id: &str) -> Option<&'a Finding> {
    h.serving
        .vllm
        .findings
        .iter()
        .chain(&h.serving.sglang.findings)
        .find(|f| f.rule == Some(id))
}

fn fires(a: &Adapter, id: &str) -> Finding {
    let h = health::check(a, &Control::default()).unwrap();
    let f = rule(&h, id).unwrap_or_else(|| panic!("{id} did not fire: {:#?}", h.serving));
    assert!(f.source.is_some_and(|s| !s.is_empty()));
    f.clone()
}

fn quiet(a: &Adapter, id: &str) {
    let h = health::check(a, &Control::default()).unwrap();
    assert!(rule(&h, id).is_none(), "{id} fired: {:#?}", h.serving);
}

fn peft_moe(dir: &Path, drop: &str) -> Adapter {
    write_with(
        dir,
        &spec(Pattern::PeftExperts { layers: vec![2, 5] }),
        |g| {
            if !drop.is_empty() {
                drop_tensors(g, drop)
            }
        },
    )
}

#[test]
fn vllm_moe_3d_missing_down_model_manager_stack_moe_lora_weights() {
    let t = tempfile::tempdir().unwrap();
    quiet(
        &peft_moe(&t.path().join("ok"), ""),
        "vllm.moe-3d-missing-down",
    );
    let f = fires(
        &peft_moe(&t.path().join("x"), "layers.5.mlp.experts.lora_"),
        "vllm.moe-3d-missing-down",
    );
    assert_eq!(
        (f.severity, f.code, f.layer),
        (Severity::Error, code::SERVE_DROPPED, Some(5))
    );
}

#[test]
fn vllm_moe_3d_missing_gate_up_model_manager_asserts_gate_up_proj_lora() {
    let t = tempfile::tempdir().unwrap();
    quiet(
        &peft_moe(&t.path().join("ok"), ""),
        "vllm.moe-3d-missing-gate-up",
    );
    let f = fires(
        &peft_moe(&t.path().join("x"), "layers.2.mlp.experts.base_layer.lora_"),
        "vllm.moe-3d-missing-gate-up",
    );
    assert_eq!(
        (f.severity, f.code, f.layer),
        (Severity::Error, code::SERVE_REFUSED, Some(2))
    );
}

#[test]
fn sglang_moe_one_sided_lora_manager_init_lora_modules_pr_32376() {
    let t = tempfile::tempdir().unwrap();
    quiet(&peft_moe(&t.path().join("ok"), ""), "sglang.moe-one-sided");
    let f = fires(
        &peft_moe(&t.path().join("x"), "layers.5.mlp.experts.lora_"),
        "sglang.moe-one-sided",
    );
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_DROPPED));
}

#[test]
fn vllm_moe_2d_incomplete_expert_lora_weights_pack_moe() {
    let t = tempfile::tempdir().unwrap();
    let s = spec(Pattern::UnslothExperts { layers: vec![5] });
    quiet(
        &write(&t.path().join("ok"), &s),
        "vllm.moe-2d-incomplete-expert",
    );
    let a = write_with(&t.path().join("x"), &s, |g| {
        drop_tensors(g, "layers.5.mlp.experts.down_projs.6.")
    });
    let f = fires(&a, "vllm.moe-2d-incomplete-expert");
    assert_eq!((f.layer, f.expert), (Some(5), Some(6)));
    assert!(f.message.contains("lacks down"), "{}", f.message);
}

/// A 2-D per-expert adapter named as gpt-oss's expert mapping names them
/// (`experts.{e}.{gate,up,down}_proj`), on layer 1 of the toy model.
fn indexed_experts(dir: &Path) -> Adapter {
    let (h, i, r, e) = (TOY8.hidden, TOY8.inter, 2, TOY8.experts);
    let mut extra = vec![];
    for x in 0..e {
        for (p, out, inp) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            let m = format!("base_model.model.model.layers.1.mlp.experts.{x}.{p}");
            extra.push(tensor(&format!("{m}.lora_A.weight"), vec![r, inp]));
            extra.push(tensor(&format!("{m}.lora_B.weight"), vec![out, r]));
        }
    }
    with_extra(dir, extra, None)
}

#[test]
fn vllm_moe_2d_on_3d_model_needs_the_mixed_format_flag_utils_process_packed_modules_mapping() {
    let t = tempfile::tempdir().unwrap();
    let a = indexed_experts(t.path());
    let f = fires(&a, "vllm.moe-2d-on-3d-model");
    assert_eq!((f.severity, f.code), (Severity::Warning, code::SERVE_FLAG));
    assert!(
        f.message.contains("--enable-mixed-moe-lora-format"),
        "{}",
        f.message
    );
    quiet(&a, "vllm.moe-unsloth-names");
    quiet(
        &peft_moe(&t.path().join("p"), ""),
        "vllm.moe-2d-on-3d-model",
    );
}

#[test]
fn vllm_moe_unsloth_names_lora_model_check_unexpected_modules() {
    let t = tempfile::tempdir().unwrap();
    let a = write(t.path(), &spec(Pattern::UnslothExperts { layers: vec![1] }));
    let f = fires(&a, "vllm.moe-unsloth-names");
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    quiet(&a, "vllm.moe-2d-on-3d-model");
}

/// PEFT's packed gpt-oss pair with gate_up's factors the other way round (PEFT 0.19.x on
/// transformers 5): lora_A (r·E, 2·inter), lora_B (hidden, r·E).
fn transposed_moe(dir: &Path) -> Adapter {
    write_with(
        dir,
        &spec(Pattern::PeftExperts { layers: vec![2, 5] }),
        |g| {
            for t in g
                .tensors
                .iter_mut()
                .filter(|t| t.name.contains("experts.base_layer.lora_"))
            {
                let shape = if t.name.contains("lora_A") {
                    vec![t.shape[0], 2 * TOY8.inter]
                } else {
                    vec![TOY8.hidden, t.shape[1]]
                };
                *t = tensor(&t.name, shape);
            }
        },
    )
}

#[test]
fn vllm_moe_transposed_fused_moe_set_lora() {
    let t = tempfile::tempdir().unwrap();
    quiet(&peft_moe(&t.path().join("ok"), ""), "vllm.moe-transposed");
    let a = transposed_moe(&t.path().join("x"));
    assert!(a.error.is_none(), "{:?}", a.error);
    let f = fires(&a, "vllm.moe-transposed");
    assert_eq!(
        (f.severity, f.code, f.layer, f.target.as_deref()),
        (
            Severity::Error,
            code::SERVE_REFUSED,
            Some(2),
            Some("gate_up_proj")
        )
    );
    assert!(f.message.contains("layers 2, 5"), "{}", f.message);
    assert!(f.message.contains("PR 3165"), "{}", f.message);
    // SGLang refuses the layout before shapes matter.
    assert_eq!(
        fires(&a, "sglang.target-parameters").code,
        code::SERVE_REFUSED
    );
}

#[test]
fn vllm_moe_shared_3d_lora_weights_pack_moe_stacked() {
    let t = tempfile::tempdir().unwrap();
    let f = fires(
        &write(t.path(), &spec(Pattern::Tinker3d)),
        "vllm.moe-shared-3d",
    );
    assert_eq!((f.severity, f.code), (Severity::Warning, code::SERVE_FLAG));
}

#[test]
fn vllm_tensor_names_utils_parse_fine_tuned_lora_name() {
    let t = tempfile::tempdir().unwrap();
    let f = fires(
        &write(t.path(), &spec(Pattern::Mlx { layers: 2 })),
        "vllm.tensor-names",
    );
    assert_eq!(f.severity, Severity::Error);
    quiet(&peft_moe(&t.path().join("p"), ""), "vllm.tensor-names");
}

#[test]
fn vllm_modules_to_save_peft_helper_validate_features() {
    let t = tempfile::tempdir().unwrap();
    let f = fires(
        &write(t.path(), &spec(Pattern::AttentionRouter)),
        "vllm.modules-to-save",
    );
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    quiet(
        &write(&t.path().join("a"), &spec(Pattern::Attention)),
        "vllm.modules-to-save",
    );
}

#[test]
fn sglang_modules_to_save_router_lora_config_never_reads_modules_to_save() {
    let t = tempfile::tempdir().unwrap();
    let f = fires(
        &write(t.path(), &spec(Pattern::AttentionRouter)),
        "sglang.modules-to-save",
    );
    assert_eq!(
        (f.severity, f.code, f.target.as_deref()),
        (Severity::Error, code::SERVE_REFUSED, Some("router"))
    );
}

fn with_extra(dir: &Path, extra: Vec<TensorData>, cfg: Option<(&str, Value)>) -> Adapter {
    write_with(dir, &spec(Pattern::Attention), |g| {
        g.tensors.extend(extra);
        if let Some((k, v)) = cfg {
            g.config[k] = v;
        }
    })
}

fn tensor(name: &str, shape: Vec<usize>) -> TensorData {
    let n: usize = shape.iter().product();
    TensorData {
        name: name.into(),
        dtype: Dtype::F32,
        bytes: Some(synth::encode(&vec![0.01; n], Dtype::F32)),
        shape,
    }
}

#[test]
fn sglang_modules_to_save_embedding_process_weight() {
    let t = tempfile::tempdir().unwrap();
    let a = with_extra(
        t.path(),
        vec![tensor("base_model.model.lm_head.weight", vec![20, 12])],
        None,
    );
    let f = fires(&a, "sglang.modules-to-save-embedding");
    assert_eq!(
        (f.severity, f.code, f.target.as_deref()),
        (Severity::Warning, code::SERVE_DROPPED, Some("lm_head"))
    );
    quiet(&a, "sglang.modules-to-save");
}

#[test]
fn vllm_and_sglang_dora_peft_helper_and_validate_new_adapter() {
    let t = tempfile::tempdir().unwrap();
    let a = with_extra(t.path(), vec![], Some(("use_dora", true.into())));
    for id in ["vllm.dora", "sglang.dora"] {
        assert_eq!(fires(&a, id).severity, Severity::Error);
    }
}

#[test]
fn lora_bias_vllm_parse_fine_tuned_lora_name_and_sglang_unverified() {
    let t = tempfile::tempdir().unwrap();
    let a = with_extra(
        t.path(),
        vec![tensor(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
            vec![16],
        )],
        None,
    );
    let f = fires(&a, "vllm.lora-bias");
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    assert!(f.source.unwrap().contains("parse_fine_tuned_lora_name"));
    quiet(&a, "vllm.bias");
    let s = fires(&a, "sglang.lora-bias");
    assert_eq!(
        (s.severity, s.code),
        (Severity::Info, code::SERVE_UNVERIFIED)
    );
}

#[test]
fn vllm_bias_config_peft_helper_validate_legal() {
    let t = tempfile::tempdir().unwrap();
    quiet(
        &with_extra(
            &t.path().join("none"),
            vec![],
            Some(("bias", "none".into())),
        ),
        "vllm.bias",
    );
    let a = with_extra(&t.path().join("all"), vec![], Some(("bias", "all".into())));
    let f = fires(&a, "vllm.bias");
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    assert!(f.source.unwrap().contains("validate_legal"));
    assert!(f.message.contains("\"all\""), "{}", f.message);
}

#[test]
fn init_base_vllm_init_is_supported_and_sglang_lora_config() {
    let t = tempfile::tempdir().unwrap();
    for (i, init) in ["pissa_niter_4", "olora", "corda", "loftq"]
        .iter()
        .enumerate()
    {
        let a = with_extra(
            &t.path().join(i.to_string()),
            vec![],
            Some(("init_lora_weights", (*init).into())),
        );
        let v = fires(&a, "vllm.init-base");
        assert_eq!(
            (v.severity, v.code),
            (Severity::Error, code::SERVE_REFUSED),
            "{init}"
        );
        let s = fires(&a, "sglang.init-base");
        assert_eq!(
            (s.severity, s.code),
            (Severity::Error, code::SERVE_WRONG_BASE),
            "{init}"
        );
        assert!(s
            .message
            .contains("path_initial_model_for_weight_conversion"));
    }
    // Inits that only set the adapter's own start values, and plain true: nothing.
    for (i, init) in [
        Value::from("eva"),
        Value::from("gaussian"),
        Value::from(true),
    ]
    .into_iter()
    .enumerate()
    {
        let a = with_extra(
            &t.path().join(format!("ok{i}")),
            vec![],
            Some(("init_lora_weights", init)),
        );
        quiet(&a, "vllm.init-base");
        quiet(&a, "sglang.init-base");
    }
}

#[test]
fn vllm_trainable_tokens_parse_fine_tuned_lora_name() {
    let t = tempfile::tempdir().unwrap();
    let a = with_extra(
        t.path(),
        vec![tensor(
            "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta",
            vec![2, 12],
        )],
        None,
    );
    assert_eq!(fires(&a, "vllm.trainable-tokens").severity, Severity::Error);
    let s = fires(&a, "sglang.trainable-tokens");
    assert_eq!(
        (s.severity, s.code),
        (Severity::Warning, code::SERVE_DROPPED)
    );
}

#[test]
fn vllm_embedding_gpt_oss_declares_no_embedding_modules() {
    let t = tempfile::tempdir().unwrap();
    let e = "base_model.model.model.embed_tokens";
    let extra = || {
        vec![
            tensor(&format!("{e}.lora_embedding_A"), vec![4, 20]),
            tensor(&format!("{e}.lora_embedding_B"), vec![12, 4]),
        ]
    };
    let a = with_extra(&t.path().join("g"), extra(), None);
    let f = fires(&a, "vllm.embedding-gpt-oss");
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    quiet(&a, "vllm.embedding");
    // Another base: the model class decides, which was not read.
    let b = with_extra(
        &t.path().join("q"),
        extra(),
        Some(("base_model_name_or_path", "Qwen/Qwen3-30B-A3B".into())),
    );
    let f = fires(&b, "vllm.embedding");
    assert_eq!(
        (f.severity, f.code),
        (Severity::Warning, code::SERVE_UNVERIFIED)
    );
    quiet(&b, "vllm.embedding-gpt-oss");
}

#[test]
fn vllm_rank_config_lora_max_lora_rank_default_16() {
    let t = tempfile::tempdir().unwrap();
    let mut s = Spec::new(WIDE, Pattern::Attention);
    s.attn_rank = 16;
    quiet(&write(&t.path().join("16"), &s), "vllm.rank");
    s.attn_rank = 20;
    let f = fires(&write(&t.path().join("20"), &s), "vllm.rank");
    assert_eq!((f.severity, f.code), (Severity::Warning, code::SERVE_FLAG));
    assert!(
        f.message.contains("needs --max-lora-rank 32"),
        "{}",
        f.message
    );
}

#[test]
fn vllm_rank_pattern_peft_helper_has_no_rank_pattern() {
    let t = tempfile::tempdir().unwrap();
    let mut s = spec(Pattern::Attention);
    s.rank_pattern = vec![("q_proj".into(), 2)];
    let f = fires(&write(t.path(), &s), "vllm.rank-pattern");
    assert_eq!((f.severity, f.code), (Severity::Warning, code::SERVE_SCALE));
}

#[test]
fn sglang_rslora_lora_adapter_scaling_alpha_over_r() {
    let t = tempfile::tempdir().unwrap();
    let mut s = spec(Pattern::Attention);
    quiet(&write(&t.path().join("plain"), &s), "sglang.rslora");
    s.rslora = true;
    let f = fires(&write(&t.path().join("rs"), &s), "sglang.rslora");
    assert_eq!((f.severity, f.code), (Severity::Warning, code::SERVE_SCALE));
    quiet(&write(&t.path().join("rs2"), &s), "vllm.rank");
}

#[test]
fn sglang_target_parameters_mem_pool_get_target_module_name() {
    let t = tempfile::tempdir().unwrap();
    let a = peft_moe(t.path(), "");
    let f = fires(&a, "sglang.target-parameters");
    assert_eq!((f.severity, f.code), (Severity::Error, code::SERVE_REFUSED));
    quiet(&a, "sglang.moe-layouts");
    quiet(
        &write(&t.path().join("a"), &spec(Pattern::Attention)),
        "sglang.target-parameters",
    );
}

#[test]
fn sglang_moe_layouts_lora_routed_expert_pattern() {
    let t = tempfile::tempdir().unwrap();
    let a = write(t.path(), &spec(Pattern::UnslothExperts { layers: vec![1] }));
    let f = fires(&a, "sglang.moe-layouts");
    assert_eq!(
        (f.severity, f.code),
        (Severity::Warning, code::SERVE_UNVERIFIED)
    );
    quiet(&a, "sglang.target-parameters");
}

#[test]
fn router_lora_vllm_gate_linear_and_sglang_known_target_modules() {
    let t = tempfile::tempdir().unwrap();
    let a = write(t.path(), &spec(Pattern::Mlx { layers: 2 }));
    let v = fires(&a, "vllm.router-lora");
    assert_eq!(
        (v.severity, v.code),
        (Severity::Warning, code::SERVE_REFUSED)
    );
    assert!(v.versions.unwrap().contains("a6b6cfa"));
    let s = fires(&a, "sglang.router-lora");
    assert_eq!((s.severity, s.code), (Severity::Error, code::SERVE_REFUSED));
}

#[test]
fn every_rule_has_a_source_and_a_unique_id() {
    let mut ids = std::collections::BTreeSet::new();
    for r in health::serving::VLLM.iter().chain(health::serving::SGLANG) {
        assert!(!r.source.is_empty(), "{}", r.id);
        assert!(ids.insert(r.id), "duplicate {}", r.id);
    }
}

/// docs/health.md's rule tables are the rule tables rendered (`serving::markdown_table`).
#[test]
fn docs_health_md_rule_tables_equal_the_rule_data() {
    use health::serving::{markdown_table, Engine};
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/health.md")).unwrap();
    for e in Engine::ALL {
        let (open, close) = (
            format!("<!-- rules:{} -->\n", e.as_str()),
            format!("<!-- /rules:{} -->", e.as_str()),
        );
        let start = doc
            .find(&open)
            .unwrap_or_else(|| panic!("docs/health.md lacks {open}"));
        let body = &doc[start + open.len()..];
        let table = &body[..body.find(&close).expect("closing marker")];
        assert_eq!(
            table,
            markdown_table(e),
            "docs/health.md's {} table differs from the rule data; paste the right side",
            e.label()
        );
    }
}

#[test]
fn every_rule_states_its_engine_version_source_and_effect_code() {
    for e in health::serving::Engine::ALL {
        for r in e.rules() {
            assert_eq!(r.engine, e, "{}", r.id);
            assert!(r.id.starts_with(&format!("{}.", e.as_str())), "{}", r.id);
            assert!(
                !r.versions.is_empty() && !r.condition.is_empty(),
                "{}",
                r.id
            );
            assert!(r.code().starts_with("serve-"), "{}", r.id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command line: exit codes, JSON, stats --json `dead`

use support::lorascope_at_home as run;

#[test]
fn check_exit_codes_follow_fail_on() {
    let t = tempfile::tempdir().unwrap();
    let ok = t.path().join("ok");
    write(&ok, &spec(Pattern::Attention));
    let warn = t.path().join("warn");
    write(
        &warn,
        &damaged(
            spec(Pattern::Attention),
            vec![dmg(Some(2), Some("q_proj"), None, DamageKind::Scale(1e-6))],
        ),
    );
    let bad = t.path().join("bad");
    write(
        &bad,
        &damaged(
            spec(Pattern::Attention),
            vec![dmg(None, Some("q_proj"), None, DamageKind::Dead)],
        ),
    );
    let code = |args: &[&str]| run(t.path(), args).status.code();
    let (ok, warn, bad) = (
        ok.to_str().unwrap(),
        warn.to_str().unwrap(),
        bad.to_str().unwrap(),
    );
    assert_eq!(code(&["check", ok]), Some(0));
    assert_eq!(code(&["check", warn]), Some(0));
    assert_eq!(code(&["check", warn, "--fail-on", "warning"]), Some(3));
    assert_eq!(code(&["check", bad]), Some(3));
    assert_eq!(code(&["check", ok, bad, "--fail-on", "never"]), Some(0));
    // Usage and lookup failures keep their codes.
    assert_eq!(code(&["check", ok, "--fail-on", "sometimes"]), Some(2));
    assert_eq!(code(&["check", "no/such-adapter"]), Some(1));
}

#[test]
fn check_json_has_the_contract_fields() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad");
    write(
        &bad,
        &damaged(
            spec(Pattern::AttentionRouter),
            vec![dmg(Some(1), Some("k_proj"), None, DamageKind::NonFinite)],
        ),
    );
    let out = run(t.path(), &["check", bad.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &v[0];
    assert_eq!(h["verdict"], "error");
    for k in ["id", "verdict", "findings", "rank_advice", "serving"] {
        assert!(h.get(k).is_some(), "missing {k}");
    }
    let f = &h["findings"][0];
    for k in [
        "code", "severity", "layer", "target", "expert", "message", "value",
    ] {
        assert!(f.get(k).is_some(), "missing {k} in {f}");
    }
    assert_eq!(f["code"], "non-finite");
    assert_eq!(
        (f["layer"].as_u64(), f["target"].as_str()),
        (Some(1), Some("k_proj"))
    );
    let r = &h["rank_advice"][0];
    for k in ["target", "rank", "rank_99", "rank_90"] {
        assert!(r.get(k).is_some(), "missing {k}");
    }
    for e in ["vllm", "sglang"] {
        assert_eq!(h["serving"][e]["verdict"], "error", "{e}");
        assert!(h["serving"][e]["findings"][0]["rule"].is_string());
    }
}

#[test]
fn check_engine_limits_the_serving_verdicts_to_one_engine() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("rs");
    let mut s = spec(Pattern::Attention);
    s.rslora = true; // SGLang serves it at another scale; vLLM serves it right.
    write(&d, &s);
    let d = d.to_str().unwrap();
    let run_json = |engine: &str| {
        let out = run(
            t.path(),
            &[
                "check",
                d,
                "--format",
                "json",
                "--fail-on",
                "warning",
                "--engine",
                engine,
            ],
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    let (code_v, v) = run_json("vllm");
    assert_eq!(code_v, Some(0));
    assert_eq!(v[0]["verdict"], "ok");
    let serving = v[0]["serving"].as_object().unwrap();
    assert_eq!(serving.keys().collect::<Vec<_>>(), ["vllm"]);
    let (code_s, v) = run_json("sglang");
    assert_eq!(code_s, Some(3));
    assert_eq!(
        v[0]["serving"]["sglang"]["findings"][0]["rule"],
        "sglang.rslora"
    );
    assert_eq!(v[0]["serving"]["sglang"]["findings"][0]["effect"], "scale");
    assert!(v[0]["serving"].get("vllm").is_none());
    // Both by default; the text names only the engine asked for.
    let both = run(t.path(), &["check", d, "--json"]);
    let v: Value = serde_json::from_slice(&both.stdout).unwrap();
    assert_eq!(v[0]["serving"].as_object().unwrap().len(), 2);
    let text = run(t.path(), &["check", d, "--engine", "vllm"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("vLLM: ok") && !text.contains("SGLang"),
        "{text}"
    );
}

#[test]
fn check_without_adapters_checks_the_whole_cache() {
    let t = tempfile::tempdir().unwrap();
    let hub = t.path().join("hub");
    let items = |s: Spec| {
        vec![synth::Item::Adapter {
            sub: String::new(),
            spec: s,
        }]
    };
    synth::write_hub_repo(&hub, "org/fine", &items(spec(Pattern::Attention))).unwrap();
    synth::write_hub_repo(
        &hub,
        "org/dead",
        &items(damaged(
            spec(Pattern::Attention),
            vec![dmg(None, None, None, DamageKind::Dead)],
        )),
    )
    .unwrap();
    let out = run(
        t.path(),
        &["check", "--cache", hub.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_str().unwrap(), h["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(verdicts, [("org/dead", "error"), ("org/fine", "ok")]);
    let text = run(t.path(), &["check", "--cache", hub.to_str().unwrap()]);
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(s.contains("org/dead  ✗ error"), "{s}");
    assert!(s.contains("2 adapters: 1 ok, 0 warning, 1 error"), "{s}");
}

#[test]
fn stats_json_says_dead_per_delta() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("a");
    write(
        &d,
        &damaged(
            spec(Pattern::Attention),
            vec![dmg(Some(1), Some("q_proj"), None, DamageKind::Dead)],
        ),
    );
    let out = run(t.path(), &["stats", d.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dead: Vec<(u64, &str)> = v["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["dead"] == true)
        .map(|x| (x["layer"].as_u64().unwrap(), x["target"].as_str().unwrap()))
        .collect();
    assert_eq!(dead, [(1, "q_proj")]);
    assert!(v["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["dead"].is_boolean()));
}

#[test]
fn report_health_counts_dead_non_finite_and_not_servable_per_pattern() {
    let t = tempfile::tempdir().unwrap();
    let hub = t.path().join("hub");
    let items = |s: Spec| {
        vec![synth::Item::Adapter {
            sub: String::new(),
            spec: s,
        }]
    };
    synth::write_hub_repo(&hub, "org/fine", &items(spec(Pattern::Attention))).unwrap();
    let dead = damaged(
        spec(Pattern::Attention),
        vec![dmg(None, Some("v_proj"), None, DamageKind::Dead)],
    );
    synth::write_hub_repo(&hub, "org/dead", &items(dead)).unwrap();
    let nan = damaged(
        spec(Pattern::AttentionRouter),
        vec![dmg(Some(0), Some("q_proj"), None, DamageKind::NonFinite)],
    );
    synth::write_hub_repo(&hub, "org/nan-router", &items(nan)).unwrap();
    synth::write_hub_repo(&hub, "org/empty", &items(spec(Pattern::Empty))).unwrap();
    let hub_s = hub.to_str().unwrap();
    let plain = run(t.path(), &["report", "--cache", hub_s, "--format", "json"]);
    let v: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(v.get("health").is_none(), "headers only unless asked");
    let out = run(
        t.path(),
        &["report", "--cache", hub_s, "--format", "json", "--health"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["health"].as_array().unwrap();
    let row = |p: &str| rows.iter().find(|r| r["pattern"] == p).unwrap().clone();
    let attn = row("attention-only");
    assert_eq!(
        (
            attn["adapters"].as_u64(),
            attn["dead"].as_u64(),
            attn["non_finite"].as_u64()
        ),
        (Some(2), Some(1), Some(0))
    );
    assert_eq!(
        (attn["ok"].as_u64(), attn["error"].as_u64()),
        (Some(1), Some(1))
    );
    let router = row("attention+router");
    assert_eq!(router["non_finite"].as_u64(), Some(1));
    assert_eq!(router["not_servable_vllm"].as_u64(), Some(1));
    assert_eq!(router["data_checked"].as_u64(), Some(1));
    // An empty file has no data to read, and is an error (it changes nothing).
    let empty = row("empty");
    assert_eq!(
        (empty["data_checked"].as_u64(), empty["error"].as_u64()),
        (Some(0), Some(1))
    );
    let md = run(t.path(), &["report", "--cache", hub_s, "--health"]);
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("## Health"), "{md}");
    assert!(
        md.contains("| attention-only | 2 | 2 | 1 | 0 | 0 | 0 | 1 / 0 / 1 |"),
        "{md}"
    );
}

#[test]
fn the_demo_cache_shows_a_dead_and_a_non_finite_verdict() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    lorascope::synth::demo::write_demo(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let out = run(
        t.path(),
        &[
            "check",
            "--cache",
            d,
            "--json",
            "lorascope-demo/gpt-oss-20b-untrained-experts",
            "lorascope-demo/gpt-oss-20b-nan-block",
            "lorascope-demo/gpt-oss-20b-attn-r8",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes = |i: usize| -> Vec<(String, Option<u64>, String)> {
        v[i]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().unwrap().to_string(),
                    f["layer"].as_u64(),
                    f["target"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        codes(0),
        [("dead".to_string(), None, "gate_up_proj".to_string())]
    );
    assert_eq!(
        codes(1),
        [("non-finite".to_string(), Some(11), "v_proj".to_string())]
    );
    assert!(codes(2).is_empty());
    assert_eq!(
        [&v[0]["verdict"], &v[1]["verdict"], &v[2]["verdict"]],
        ["error", "error", "ok"]
    );
}

/// vLLM's `PEFTHelper.from_local_dir` and SGLang's `LoRAConfig` open adapter_config.json,
/// `json.load` it and index r, lora_alpha and target_modules: a config they cannot read is a
/// refused adapter, while a config lorascope reads with PEFT's defaults is fine for lorascope.
#[test]
fn an_adapter_config_the_engines_cannot_load_is_refused_by_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let good = write(&dir, &spec(Pattern::Attention));
    for id in ["vllm.config", "sglang.config"] {
        quiet(&good, id);
    }
    let cfg = dir.join("adapter_config.json");
    let full: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    let without = |key: &str| {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    };
    let with = |key: &str, x: serde_json::Value| {
        let mut v = full.clone();
        v[key] = x;
        v.to_string()
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("there is no adapter_config.json", None),
        ("invalid JSON", Some("{\"r\": 8, ".into())),
        ("not a JSON object", Some("[1, 2]".into())),
        ("r is \"eight\"", Some(with("r", "eight".into()))),
        ("r is 0", Some(with("r", 0.into()))),
        ("has no target_modules", Some(without("target_modules"))),
        ("has no r", Some(without("r"))),
        (
            "has no r, lora_alpha, target_modules",
            Some(
                r#"{"fine_tune_type": "lora", "lora_parameters": {"rank": 8, "scale": 2.0}}"#
                    .into(),
            ),
        ),
    ];
    for (says, text) in cases {
        match &text {
            None => std::fs::remove_file(&cfg).unwrap(),
            Some(t) => std::fs::write(&cfg, t).unwrap(),
        }
        let a = load(&dir);
        for id in ["vllm.config", "sglang.config"] {
            let f = fires(&a, id);
            assert_eq!(f.effect, Some("refused"), "{id}");
            assert!(f.message.contains(says), "{id} on {text:?}: {}", f.message);
        }
    }
}
