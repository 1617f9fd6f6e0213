//! Issue 10: every LoRA a user can have on disk is read right, or said plainly to be not
//! understood. The layouts of docs/layouts.md by name and shape, the two former misreadings
//! (Unsloth's expert module lists, mlx-lm), and a property test that no unknown tensor is ever
//! counted in a delta. Dense f64 references of every statistic are in tests/math.rs.

mod support;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::layout::{ExpertLayout, Format, LayoutOptions, PairProblem, Pick, Role};
use lorascope::adapter::{Adapter, Kind, Pattern as Pat};
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::synth::{self, Damage, DamageKind, Dims, Pattern, Rng, Spec, TensorData};
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

fn scan(dir: &Path) -> Adapter {
    let mut v = discovery::scan(&ScanRequest {
        cache: None,
        paths: vec![dir.to_path_buf()],
        layout: LayoutOptions::default(),
    });
    assert_eq!(v.len(), 1);
    v.pop().expect("one adapter")
}

/// Writes tensors (holes when `values` gives None) and an optional config, and scans them.
fn write_and_scan(
    dir: &Path,
    file: &str,
    tensors: &[(&str, Vec<usize>)],
    config: Option<&str>,
    values: &dyn Fn(&str, usize) -> Option<Vec<f64>>,
) -> Adapter {
    let t: Vec<TensorData> = tensors
        .iter()
        .map(|(n, s)| TensorData {
            name: n.to_string(),
            dtype: Dtype::F32,
            shape: s.clone(),
            bytes: values(n, s.iter().product()).map(|v| synth::encode(&v, Dtype::F32)),
        })
        .collect();
    synth::write_safetensors(&dir.join(file), &t, true).expect("write");
    if let Some(c) = config {
        std::fs::write(dir.join("adapter_config.json"), c).expect("config");
    }
    scan(dir)
}

fn named(v: &[(String, Vec<usize>)]) -> Vec<(&str, Vec<usize>)> {
    v.iter().map(|(n, s)| (n.as_str(), s.clone())).collect()
}

fn holes(_: &str, _: usize) -> Option<Vec<f64>> {
    None
}

fn toy(pattern: Pattern) -> Spec {
    let mut s = Spec::new(Dims::TOY, pattern);
    s.attn_rank = 4;
    s.expert_rank = 3;
    s
}

fn targets(a: &Adapter) -> BTreeSet<String> {
    a.targets().into_iter().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn unsloth_expert_module_lists_are_per_expert_deltas_not_attention_only() {
    let t = tempfile::tempdir().unwrap();
    let s = toy(Pattern::UnslothExperts { layers: vec![1] });
    let g = synth::write_adapter(t.path(), &s).unwrap();
    let a = scan(t.path());
    let d = Dims::TOY;
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.pattern(), Pat::ExpertsModuleList);
    assert_eq!(
        a.pattern().as_str(),
        "attention+experts per-expert (module list)"
    );
    assert_eq!(a.format(), Some(Format::Unsloth));
    assert_eq!(
        targets(&a),
        set(&[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_up_proj",
            "down_proj"
        ]),
        "the expert index is never a target"
    );
    assert_eq!(a.experts(), Some(d.experts));
    assert_eq!(a.expert_layers(), vec![1]);
    assert_eq!((a.attention_rank(), a.expert_rank()), (Some(4), Some(3)));
    assert_eq!(a.unrecognised(), 0);
    assert_eq!(a.deltas.len(), g.planted.len());
    let gate_up: Vec<_> = a
        .deltas
        .iter()
        .filter(|x| x.target == "gate_up_proj")
        .collect();
    assert_eq!(
        gate_up.iter().map(|x| x.expert).collect::<Vec<_>>(),
        (0..d.experts).map(Some).collect::<Vec<_>>()
    );
    for x in &gate_up {
        assert_eq!((x.out_dim, x.in_dim), (2 * d.inter, d.hidden));
        assert_eq!((x.a.pick, x.b.pick), (Pick::All, Pick::All));
        assert_eq!(x.scale, s.alpha / 3.0);
        assert_eq!(x.expert_layout, Some(ExpertLayout::ModuleList));
    }
}

#[test]
fn mlx_adapters_are_lora_with_transposed_factors_and_their_own_scale() {
    let t = tempfile::tempdir().unwrap();
    let mut s = toy(Pattern::Mlx { layers: 2 });
    s.alpha = 20.0;
    let g = synth::write_adapter(t.path(), &s).unwrap();
    assert!(t.path().join("adapters.safetensors").is_file());
    let a = scan(t.path());
    let d = Dims::TOY;
    assert_eq!(a.kind, Kind::Lora, "never full-weights: {:?}", a.error);
    assert_eq!(a.format(), Some(Format::Mlx));
    assert_eq!(
        targets(&a),
        set(&[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "router",
            "gate_proj",
            "up_proj",
            "down_proj"
        ])
    );
    assert_eq!(a.unrecognised(), 0);
    assert_eq!(a.deltas.len(), g.planted.len());
    assert!(
        a.notes.iter().all(|n| !n.contains("defaults")),
        "an mlx-lm config is not a PEFT config with defaults: {:?}",
        a.notes
    );
    let q = a
        .deltas
        .iter()
        .find(|x| x.target == "q_proj")
        .expect("q_proj");
    assert_eq!((q.out_dim, q.in_dim, q.rank), (d.q_out, d.hidden, 4));
    assert_eq!((q.a.pick, q.b.pick), (Pick::Transposed, Pick::Transposed));
    assert_eq!(q.scale, 20.0, "lora_parameters.scale, not alpha/r");
    let up: Vec<_> = a.deltas.iter().filter(|x| x.target == "up_proj").collect();
    assert_eq!(up.len(), 2 * d.experts);
    assert!(up
        .iter()
        .all(|x| (x.out_dim, x.in_dim, x.rank, x.scale) == (d.inter, d.hidden, 3, 20.0)));
    assert_eq!(a.expert_layers(), vec![1, 2]);
}

/// Names a writer of no known layout might produce; each must end up `unknown`. `factors` are
/// the adapter's own factor names, of which a second copy (`lora_B.copy.weight`) is made.
fn unknown_name(rng: &mut Rng, n: usize, layers: usize, factors: &[&str]) -> String {
    let l = rng.next_u64() as usize % layers;
    let p = if rng.next_u64() % 2 == 0 {
        "base_model.model."
    } else {
        ""
    };
    match rng.next_u64() % 7 {
        0 => format!("{p}model.layers.{l}.self_attn.q_proj.lora_X{n}.weight"),
        1 => format!("{p}model.layers.{l}.mlp.experts.{n}.hada_w1_a"),
        2 => format!("lora_unet_block_{l}.lokr_w{n}"),
        3 => format!("{p}model.layers.{l}.self_attn.k_proj.lora_A.weight.extra{n}"),
        4 => format!("{p}model.layers.{l}.mlp.experts.foo.bar{n}.lora_B.weight"),
        5 => format!("{p}model.layers.{l}.dora_scale_{n}"),
        _ => {
            let f = factors[rng.next_u64() as usize % factors.len()];
            format!("{}.copy{n}.weight", f.trim_end_matches(".weight"))
        }
    }
}

#[test]
fn unknown_tensors_are_never_counted_in_a_delta_and_always_reported() {
    let mut rng = Rng::new(10);
    let layouts = [
        Pattern::Attention,
        Pattern::AttentionRouter,
        Pattern::PeftExperts { layers: vec![1] },
        Pattern::Tinker3d,
        Pattern::UnslothExperts { layers: vec![0, 2] },
        Pattern::Mlx { layers: 2 },
    ];
    for case in 0..200 {
        let mut s = toy(layouts[case % layouts.len()].clone());
        s.sparse = true;
        s.seed = case as u64;
        let g = synth::generate(&s);
        let t = tempfile::tempdir().unwrap();
        let file = s.pattern.file_name();
        let config = serde_json::to_string(&g.config).unwrap();
        let known: Vec<(String, Vec<usize>)> = g
            .tensors
            .iter()
            .map(|x| (x.name.clone(), x.shape.clone()))
            .collect();
        let n_unknown = 1 + rng.next_u64() as usize % 6;
        let mut injected: BTreeSet<String> = BTreeSet::new();
        let factors: Vec<&str> = known
            .iter()
            .map(|x| x.0.as_str())
            .filter(|n| n.contains(".lora_"))
            .collect();
        while injected.len() < n_unknown {
            let n = injected.len();
            injected.insert(unknown_name(&mut rng, n, Dims::TOY.layers, &factors));
        }
        let mut all = known.clone();
        for name in &injected {
            let dims = 1 + rng.next_u64() as usize % 3;
            let shape = (0..dims).map(|_| 1 + rng.next_u64() as usize % 5).collect();
            all.push((name.clone(), shape));
        }
        let base = write_and_scan(t.path(), file, &named(&known), Some(&config), &holes);
        let mixed = t.path().join("mixed");
        std::fs::create_dir(&mixed).unwrap();
        let a = write_and_scan(&mixed, file, &named(&all), Some(&config), &holes);
        let ctx = format!("case {case} {:?}: {injected:?}", s.pattern);
        assert_eq!(a.kind, Kind::Lora, "{ctx}: {:?}", a.error);
        let is_injected = |i: usize| injected.contains(&a.tensors[i].info.name);
        for d in &a.deltas {
            assert!(
                !is_injected(d.a.tensor) && !is_injected(d.b.tensor),
                "{ctx}: {d:?}"
            );
        }
        for t in &a.tensors {
            let inj = injected.contains(&t.info.name);
            assert_eq!(t.name.role == Role::Unknown, inj, "{ctx}: {}", t.info.name);
        }
        assert_eq!(a.unrecognised(), n_unknown, "{ctx}");
        assert!(
            a.notes
                .iter()
                .any(|n| n.starts_with(&format!("unrecognised: {n_unknown} tensor"))),
            "{ctx}: {:?}",
            a.notes
        );
        let keys = |x: &Adapter| x.deltas.iter().map(|d| d.key()).collect::<Vec<_>>();
        assert_eq!(
            keys(&a),
            keys(&base),
            "{ctx}: the known deltas are all still read"
        );
        assert_eq!(a.pattern(), base.pattern(), "{ctx}");
    }
}

#[test]
fn mixtral_style_block_sparse_moe_module_lists() {
    let t = tempfile::tempdir().unwrap();
    let mut tensors = vec![];
    let names: Vec<(String, Vec<usize>)> = (0..3)
        .flat_map(|e| {
            let m = format!("base_model.model.model.layers.2.block_sparse_moe.experts.{e}");
            [
                (format!("{m}.w1.lora_A.weight"), vec![2, 12]),
                (format!("{m}.w1.lora_B.weight"), vec![10, 2]),
                (format!("{m}.w2.lora_A.weight"), vec![2, 10]),
                (format!("{m}.w2.lora_B.weight"), vec![12, 2]),
            ]
        })
        .collect();
    tensors.extend(names.iter().map(|(n, s)| (n.as_str(), s.clone())));
    let a = write_and_scan(
        t.path(),
        "adapter_model.safetensors",
        &tensors,
        Some(r#"{"r": 2, "lora_alpha": 4}"#),
        &holes,
    );
    assert_eq!(a.pattern(), Pat::ExpertsModuleList);
    assert_eq!(targets(&a), set(&["gate_proj", "down_proj"]));
    assert_eq!((a.experts(), a.expert_layers()), (Some(3), vec![2]));
    assert!(a.deltas.iter().all(|d| d.scale == 2.0 && d.rank == 2));
}

#[test]
fn stacked_3d_experts_without_an_experts_segment_are_told_by_ndim() {
    let t = tempfile::tempdir().unwrap();
    let m = "base_model.model.model.layers.0.mlp.gate_proj";
    let (an, bn) = (format!("{m}.lora_A.weight"), format!("{m}.lora_B.weight"));
    let a = write_and_scan(
        t.path(),
        "adapter_model.safetensors",
        &[(&an, vec![4, 2, 12]), (&bn, vec![4, 10, 2])],
        Some(r#"{"r": 2, "lora_alpha": 2}"#),
        &holes,
    );
    assert_eq!(a.deltas.len(), 4);
    assert!(a
        .deltas
        .iter()
        .all(|d| d.target == "gate_proj" && (d.out_dim, d.in_dim) == (10, 12)));
    assert_eq!(a.experts(), Some(4));
}

#[test]
fn kohya_down_up_alpha_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let m = "lora_te_model_layers_0_self_attn_q_proj";
    let (dn, up, al) = (
        format!("{m}.lora_down.weight"),
        format!("{m}.lora_up.weight"),
        format!("{m}.alpha"),
    );
    // ΔW = (alpha/r)·up·down with down = [I₂ | 0] (2×6) and up = diag-ish (5×2): σ = 3·(2, 1).
    let values = |n: &str, len: usize| -> Option<Vec<f64>> {
        Some(if n.ends_with("alpha") {
            vec![6.0]
        } else if n.contains("lora_down") {
            (0..len)
                .map(|i| f64::from(u8::from(i == 0 || i == 7)))
                .collect()
        } else {
            let mut v = vec![0.0; len];
            v[0] = 2.0; // row 0, col 0
            v[3] = 1.0; // row 1, col 1
            v
        })
    };
    let a = write_and_scan(
        t.path(),
        "model.safetensors",
        &[(&dn, vec![2, 6]), (&up, vec![5, 2]), (&al, vec![])],
        None,
        &values,
    );
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.format(), Some(Format::Kohya));
    let d = &a.deltas[0];
    assert_eq!((d.rank, d.scale, d.out_dim, d.in_dim), (2, 3.0, 5, 6));
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let sv = &st.deltas[0].singular_values;
    assert!(
        (sv[0] - 6.0).abs() < 1e-12 && (sv[1] - 3.0).abs() < 1e-12,
        "{sv:?}"
    );
}

#[test]
fn loha_and_lokr_are_an_unsupported_adapter_type_not_full_weights() {
    for (kind, names) in [
        (
            "LoHa",
            vec!["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"],
        ),
        ("LoKr", vec!["lokr_w1", "lokr_w2_a", "lokr_w2_b"]),
    ] {
        let t = tempfile::tempdir().unwrap();
        let full: Vec<String> = names
            .iter()
            .map(|n| format!("lora_unet_down_blocks_0_attentions_0_proj_in.{n}"))
            .collect();
        let tensors: Vec<(&str, Vec<usize>)> =
            full.iter().map(|n| (n.as_str(), vec![4, 4])).collect();
        let a = write_and_scan(t.path(), "x.safetensors", &tensors, None, &holes);
        assert_eq!(a.kind, Kind::Lora, "{kind}");
        assert_ne!(a.pattern(), Pat::FullWeights, "{kind}");
        assert_eq!(a.format(), Some(Format::Lycoris), "{kind}");
        assert_eq!(a.unrecognised(), names.len(), "{kind}");
        assert!(a.deltas.is_empty() && a.full.is_empty(), "{kind}");
        assert!(
            a.notes.iter().any(|n| n.contains(&format!(
                "{kind} (LyCORIS) tensor: an unsupported adapter type"
            ))),
            "{kind}: {:?}",
            a.notes
        );
    }
}

#[test]
fn peft_with_three_target_parameters_nests_base_layers() {
    let t = tempfile::tempdir().unwrap();
    let ex = "base_model.model.model.layers.0.mlp.experts";
    // Innermost wrapper (deepest `base_layer`) = first of target_parameters.
    let names = [
        (
            format!("{ex}.base_layer.base_layer.lora_A.weight"),
            vec![8, 12],
        ),
        (
            format!("{ex}.base_layer.base_layer.lora_B.weight"),
            vec![10, 8],
        ),
        (format!("{ex}.base_layer.lora_A.weight"), vec![8, 12]),
        (format!("{ex}.base_layer.lora_B.weight"), vec![10, 8]),
        (format!("{ex}.lora_A.weight"), vec![8, 10]),
        (format!("{ex}.lora_B.weight"), vec![12, 8]),
    ];
    let tensors: Vec<(&str, Vec<usize>)> =
        names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let a = write_and_scan(
        t.path(),
        "adapter_model.safetensors",
        &tensors,
        Some(
            r#"{"r": 2, "lora_alpha": 4, "target_parameters":
                ["mlp.experts.gate_proj", "mlp.experts.up_proj", "mlp.experts.down_proj"]}"#,
        ),
        &holes,
    );
    let per = |target: &str| {
        a.deltas
            .iter()
            .filter(|d| d.target == target)
            .map(|d| (d.out_dim, d.in_dim, d.expert))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        per("gate_proj"),
        (0..4).map(|e| (10, 12, Some(e))).collect::<Vec<_>>()
    );
    assert_eq!(
        per("up_proj"),
        (0..4).map(|e| (10, 12, Some(e))).collect::<Vec<_>>()
    );
    assert_eq!(
        per("down_proj"),
        (0..4).map(|e| (12, 10, Some(e))).collect::<Vec<_>>()
    );
    assert!(
        a.notes.iter().all(|n| !n.contains("do not fit")),
        "{:?}",
        a.notes
    );

    // The same file with target_parameters in another order: read as the config says, and a
    // note says that the shapes disagree.
    let t = tempfile::tempdir().unwrap();
    let a = write_and_scan(
        t.path(),
        "adapter_model.safetensors",
        &tensors,
        Some(
            r#"{"r": 2, "lora_alpha": 4, "target_parameters":
                ["mlp.experts.down_proj", "mlp.experts.up_proj", "mlp.experts.gate_proj"]}"#,
        ),
        &holes,
    );
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("do not fit target_parameters' order")),
        "{:?}",
        a.notes
    );
}

#[test]
fn scan_inspect_and_report_say_what_is_not_understood() {
    let home = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("adapter");
    let mut s = toy(Pattern::Mlx { layers: 1 });
    s.sparse = true;
    let g = synth::generate(&s);
    let mut tensors: Vec<(String, Vec<usize>)> = g
        .tensors
        .iter()
        .map(|x| (x.name.clone(), x.shape.clone()))
        .collect();
    tensors.push(("model.layers.2.self_attn.q_proj.lora_magic".into(), vec![3]));
    tensors.push((
        "model.layers.2.self_attn.q_proj.hada_w1_a".into(),
        vec![3, 2],
    ));
    let named: Vec<(&str, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    std::fs::create_dir(&dir).unwrap();
    let config = serde_json::to_string(&g.config).unwrap();
    write_and_scan(&dir, "adapters.safetensors", &named, Some(&config), &holes);
    let d = dir.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = support::lorascope(args, home.path(), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&run(&["scan", d, "--json"])).unwrap();
    let o = &v[0];
    assert_eq!(
        (&o["kind"], &o["format"], &o["unrecognised"]),
        (&json!("lora"), &json!("mlx"), &json!(2))
    );
    assert!(
        o["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("unrecognised: 2 tensors")),
        "{o}"
    );
    let table = run(&["scan", d]);
    assert!(
        table.contains("not understood:") && table.contains("unrecognised: 2 tensors"),
        "{table}"
    );
    let v: Value = serde_json::from_str(&run(&["inspect", d, "--json"])).unwrap();
    let roles: Vec<(&str, &str)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    for (n, r) in &roles {
        let want = if n.ends_with("lora_magic") || n.contains("hada_") {
            "unknown"
        } else if n.ends_with("lora_a") {
            "lora_A"
        } else {
            "lora_B"
        };
        assert_eq!(*r, want, "{n}");
    }
    // The explorer's list marks the adapter: `?2` after its pattern, and a filter finds it.
    let row = lorascope::tui::model::ListRow::new(&scan(&dir));
    let cell = row.cell(lorascope::tui::model::ListColumn::Pattern);
    assert!(cell.ends_with(" ?2"), "{cell}");
    assert!(row.matches("unrecognised"));
    let report = run(&["report", d]);
    assert!(
        report.contains("hold tensors lorascope does not understand"),
        "{report}"
    );
    assert!(report.contains("**Formats**: mlx"), "{report}");
}

#[test]
fn embedding_lora_is_the_transpose_and_extras_are_listed_with_notes() {
    let t = tempfile::tempdir().unwrap();
    let e = "base_model.model.model.embed_tokens";
    let q = "base_model.model.model.layers.0.self_attn.q_proj";
    let names = [
        (format!("{e}.lora_embedding_A"), vec![2, 7]),
        (format!("{e}.lora_embedding_B"), vec![5, 2]),
        (format!("{q}.lora_A.weight"), vec![2, 5]),
        (format!("{q}.lora_B.weight"), vec![3, 2]),
        (format!("{q}.lora_magnitude_vector"), vec![3]),
        ("base_model.model.lm_head.weight".to_string(), vec![7, 5]),
    ];
    let tensors: Vec<(&str, Vec<usize>)> =
        names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let values = |n: &str, len: usize| {
        Some(
            (0..len)
                .map(|i| ((i * 7 + n.len()) % 11) as f64 - 5.0)
                .collect(),
        )
    };
    let a = write_and_scan(
        t.path(),
        "adapter_model.safetensors",
        &tensors,
        Some(r#"{"r": 2, "lora_alpha": 2, "use_dora": true}"#),
        &values,
    );
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    let d = a
        .deltas
        .iter()
        .find(|d| d.target == "embed_tokens")
        .expect("embedding delta");
    // ΔW = (B·A)ᵀ is V × H = 7 × 5; its factors read back multiply to exactly that.
    assert_eq!((d.out_dim, d.in_dim, d.rank), (7, 5, 2));
    let (br, bc, b) = support::read_factor(&a, d.b);
    let (ar, ac, af) = support::read_factor(&a, d.a);
    assert_eq!((br, bc, ar, ac), (7, 2, 2, 5));
    let raw_a = values(&names[0].0, 14).unwrap(); // (2, 7)
    let raw_b = values(&names[1].0, 10).unwrap(); // (5, 2)
    for v in 0..7 {
        for h in 0..5 {
            let got: f64 = (0..2).map(|k| b[v * 2 + k] * af[k * 5 + h]).sum();
            let want: f64 = (0..2).map(|k| raw_b[h * 2 + k] * raw_a[k * 7 + v]).sum();
            assert_eq!(got, want, "ΔW[{v}][{h}]");
        }
    }
    let role = |suffix: &str| {
        a.tensors
            .iter()
            .find(|t| t.info.name.ends_with(suffix))
            .map(|t| t.name.role)
    };
    assert_eq!(role("lora_magnitude_vector"), Some(Role::DoraMagnitude));
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("DoRA: statistics are of s·B·A")),
        "{:?}",
        a.notes
    );
    assert!(
        a.notes
            .iter()
            .any(|n| n.contains("full copies") && n.contains("lm_head.weight")),
        "{:?}",
        a.notes
    );
    assert_eq!(a.unrecognised(), 0);
}

#[test]
fn mlx_dora_magnitude_is_an_extra_not_a_full_tensor() {
    let t = tempfile::tempdir().unwrap();
    let m = "model.layers.0.self_attn.q_proj";
    let names = [
        (format!("{m}.lora_a"), vec![5, 2]),
        (format!("{m}.lora_b"), vec![2, 3]),
        (format!("{m}.m"), vec![3]),
    ];
    let tensors: Vec<(&str, Vec<usize>)> =
        names.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let cfg = r#"{"fine_tune_type": "dora", "num_layers": 1,
                  "lora_parameters": {"rank": 2, "scale": 10.0, "dropout": 0.0}}"#;
    let a = write_and_scan(
        t.path(),
        "adapters.safetensors",
        &tensors,
        Some(cfg),
        &holes,
    );
    assert_eq!(a.format(), Some(Format::Mlx));
    assert!(a.full.is_empty(), "{:?}", a.full);
    assert_eq!(a.tensors[2].name.role, Role::DoraMagnitude);
    assert_eq!((a.deltas.len(), a.deltas[0].scale), (1, 10.0));
}

// ---------------------------------------------------------------------------------------------
// Issue 23: half-broken adapters still open

/// One module broken in each layout family: (layout, where the damage is planted, the module
/// lorascope must name, the expert it names: a module-list module is one expert).
fn broken_cases() -> Vec<(Pattern, usize, &'static str, Option<usize>, &'static str)> {
    vec![
        (
            Pattern::Attention,
            1,
            "q_proj",
            None,
            "model.layers.1.self_attn.q_proj",
        ),
        (
            Pattern::PeftExperts { layers: vec![1, 2] },
            1,
            "gate_up_proj",
            Some(0),
            "model.layers.1.mlp.experts.base_layer",
        ),
        (
            Pattern::UnslothExperts { layers: vec![0, 2] },
            2,
            "down_proj",
            Some(1),
            "model.layers.2.mlp.experts.down_projs.1",
        ),
        (
            Pattern::Tinker3d,
            0,
            "up_proj",
            Some(3),
            "model.layers.0.mlp.experts.w3",
        ),
        (
            Pattern::Mlx { layers: 2 },
            2,
            "v_proj",
            None,
            "model.layers.2.self_attn.v_proj",
        ),
        (
            Pattern::Mlx { layers: 2 },
            1,
            "down_proj",
            Some(0),
            "model.layers.1.mlp.experts.down_proj",
        ),
    ]
}

#[test]
fn an_incomplete_pair_in_any_layout_leaves_that_module_unknown_and_reads_the_rest() {
    let kinds = [
        (DamageKind::MissingB, PairProblem::MissingB, 1),
        (DamageKind::MissingA, PairProblem::MissingA, 1),
        (DamageKind::RankMismatch, PairProblem::Rank, 2),
    ];
    for (pattern, layer, target, expert, module) in broken_cases() {
        for (kind, problem, n_unknown) in kinds {
            let t = tempfile::tempdir().unwrap();
            let twin = toy(pattern.clone());
            let mut s = twin.clone();
            s.damage = vec![Damage::new(Some(layer), Some(target), expert, kind)];
            synth::write_adapter(&t.path().join("twin"), &twin).unwrap();
            synth::write_adapter(&t.path().join("broken"), &s).unwrap();
            let (ok, a) = (scan(&t.path().join("twin")), scan(&t.path().join("broken")));
            let ctx = format!("{pattern:?} {kind:?}");
            assert_eq!((a.kind, &a.error), (Kind::Lora, &None), "{ctx}");
            assert_eq!(
                (a.pattern(), a.format()),
                (ok.pattern(), ok.format()),
                "{ctx}"
            );
            assert_eq!(a.incomplete.len(), 1, "{ctx}");
            let inc = &a.incomplete[0];
            let named_expert = expert.filter(|_| matches!(pattern, Pattern::UnslothExperts { .. }));
            assert_eq!(
                (
                    inc.module.as_str(),
                    inc.problem,
                    inc.layer,
                    inc.target.as_str(),
                    inc.expert
                ),
                (module, problem, Some(layer), target, named_expert),
                "{ctx}"
            );
            assert_eq!(
                (a.unrecognised(), inc.tensors.len()),
                (n_unknown, n_unknown),
                "{ctx}"
            );
            for &i in &inc.tensors {
                let n = &a.tensors[i].name;
                assert_eq!(n.role, Role::Unknown, "{ctx}");
                let why = n.unknown.as_deref().unwrap();
                assert_eq!(why, format!("incomplete LoRA pair: {}", inc.why()), "{ctx}");
            }
            assert!(
                a.notes.iter().any(
                    |n| n.starts_with(&format!("unrecognised: {n_unknown} tensor"))
                        && n.contains(problem.as_str())
                ),
                "{ctx}: {:?}",
                a.notes
            );
            // Every other delta is read as in the healthy twin (rank, scale, shape).
            let shape = |d: &lorascope::adapter::layout::Delta| {
                (
                    d.key(),
                    d.module.clone(),
                    d.rank,
                    d.scale,
                    d.out_dim,
                    d.in_dim,
                )
            };
            let want: Vec<_> = ok
                .deltas
                .iter()
                .filter(|d| d.module != module)
                .map(shape)
                .collect();
            assert!(
                want.len() < ok.deltas.len(),
                "{ctx}: the twin has the module"
            );
            assert_eq!(
                a.deltas.iter().map(shape).collect::<Vec<_>>(),
                want,
                "{ctx}"
            );
        }
    }
}

#[test]
fn a_kohya_lora_down_without_lora_up_is_incomplete_and_its_alpha_still_an_extra() {
    let t = tempfile::tempdir().unwrap();
    let (q, v) = (
        "lora_te_model_layers_0_self_attn_q_proj",
        "lora_te_model_layers_0_self_attn_v_proj",
    );
    let tensors = [
        (format!("{q}.lora_down.weight"), vec![2, 6]),
        (format!("{q}.lora_up.weight"), vec![5, 2]),
        (format!("{q}.alpha"), vec![]),
        (format!("{v}.lora_down.weight"), vec![2, 6]),
        (format!("{v}.alpha"), vec![]),
    ];
    let ones = |_: &str, n: usize| Some(vec![1.0; n]);
    let a = write_and_scan(t.path(), "model.safetensors", &named(&tensors), None, &ones);
    assert_eq!(
        (a.kind, a.format(), a.deltas.len()),
        (Kind::Lora, Some(Format::Kohya), 1)
    );
    assert_eq!(a.deltas[0].module, q);
    assert_eq!(a.incomplete.len(), 1);
    assert_eq!(
        (a.incomplete[0].module.as_str(), a.incomplete[0].problem),
        (v, PairProblem::MissingB)
    );
    let role = |n: &str| {
        a.tensors
            .iter()
            .find(|t| t.info.name == n)
            .unwrap()
            .name
            .role
    };
    assert_eq!(role(&format!("{v}.lora_down.weight")), Role::Unknown);
    assert_eq!(role(&format!("{v}.alpha")), Role::Alpha);
    assert_eq!(a.unrecognised(), 1);
}

/// The orphan lora_A through the binary: `scan` (kind, count), `inspect` (role and reason per
/// tensor, in JSON and in the tree), `stats` (every other delta).
#[test]
fn scan_inspect_and_stats_open_an_adapter_with_an_orphan_lora_a() {
    let home = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mut s = toy(Pattern::PeftExperts { layers: vec![1] });
    s.damage = vec![Damage::new(
        Some(1),
        Some("gate_up_proj"),
        None,
        DamageKind::MissingB,
    )];
    synth::write_adapter(t.path(), &s).unwrap();
    let a = scan(t.path());
    let d = t.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = support::lorascope(args, home.path(), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&run(&["scan", d, "--json"])).unwrap();
    let o = &v[0];
    assert_eq!(
        (&o["kind"], &o["error"], &o["unrecognised"], &o["pattern"]),
        (
            &json!("lora"),
            &Value::Null,
            &json!(1),
            &json!("attention+experts per-expert")
        )
    );
    assert_eq!(o["deltas"], json!(a.deltas.len()));
    let orphan = "base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight";
    let table = run(&["scan", d]);
    assert!(
        table.contains("not understood:") && table.contains(orphan),
        "{table}"
    );
    let v: Value = serde_json::from_str(&run(&["inspect", d, "--json"])).unwrap();
    let roles: Vec<(&str, &str, Option<&str>)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["role"].as_str().unwrap(),
                t["unknown"].as_str(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(
            orphan,
            "unknown",
            Some("incomplete LoRA pair: lora_A without lora_B")
        )),
        "{roles:?}"
    );
    assert!(roles
        .iter()
        .all(|r| (r.1 == "unknown") == (r.0 == orphan) && r.2.is_some() == (r.0 == orphan)));
    let text = run(&["inspect", d]);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("mlp.experts.base_layer.lora_A"))
        .unwrap();
    assert!(line.contains("unknown"), "{line}");
    let st: Value = serde_json::from_str(&run(&["stats", d, "--json"])).unwrap();
    let n = st["deltas"].as_array().unwrap().len();
    assert_eq!(n, a.deltas.len());
    assert!(
        n > 0
            && a.deltas
                .iter()
                .all(|d| d.layer != Some(1) || d.target != "gate_up_proj")
    );
}

/// PEFT nests ParamWrappers in the order the module registers its parameters
/// (`BaseTuner._inject_parameters` walks `named_parameters`), not the config's order: gpt-oss's
/// gate_up is always `experts.base_layer`, even when the config lists down_proj first.
#[test]
fn packed_experts_follow_registration_order_not_the_configs() {
    let spec = toy(Pattern::PeftExperts { layers: vec![0] });
    let read = |reverse: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let g = synth::write_adapter(tmp.path(), &spec).unwrap();
        let mut cfg = g.config.clone();
        if reverse {
            let list = cfg["target_parameters"].as_array_mut().unwrap();
            list.reverse();
            assert!(list[0].as_str().unwrap().ends_with("down_proj"));
            std::fs::write(
                tmp.path().join("adapter_config.json"),
                serde_json::to_vec(&cfg).unwrap(),
            )
            .unwrap();
        }
        let a = scan(tmp.path());
        let dims: BTreeSet<(String, usize, usize)> = a
            .deltas
            .iter()
            .filter(|d| d.expert.is_some())
            .map(|d| (d.target.to_string(), d.out_dim, d.in_dim))
            .collect();
        (dims, a.notes)
    };
    let (as_written, _) = read(false);
    let (reversed, notes) = read(true);
    assert_eq!(reversed, as_written);
    let d = spec.dims;
    assert!(reversed.contains(&("gate_up_proj".into(), 2 * d.inter, d.hidden)));
    assert!(!notes.iter().any(|n| n.contains("do not fit")), "{notes:?}");
}
