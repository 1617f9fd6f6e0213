//! GGUF LoRA adapters (llama.cpp's `convert_lora_to_gguf.py` layout): discovery, the header's
//! meaning, statistics against a dense f64 reference in every type lorascope reads (F32, F16,
//! BF16, Q8_0), `compare` against the safetensors adapter a GGUF mirrors, the file gguf-py itself
//! wrote (tests/fixtures/writers/make_gguf.py), and the CLI contracts.

mod support;

use faer::Mat;
use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::gguf::{self, GgmlType, Value, WriteTensor};
use lorascope::adapter::layout::{DeltaKey, Format, LayoutOptions, PairProblem};
use lorascope::adapter::{Adapter, Kind, Pattern as ScanPattern};
use lorascope::compute::compare;
use lorascope::compute::stats::{self, Control, DeltaStats, Filter};
use lorascope::synth::{self, Dims, Pattern, Spec};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Rows of whole Q8_0 blocks (hidden, q_out, inter multiples of 32), small enough for dense SVDs.
const DIMS: Dims = Dims {
    layers: 2,
    hidden: 64,
    q_out: 64,
    kv_out: 32,
    experts: 3,
    inter: 64,
};

fn spec(pattern: Pattern) -> Spec {
    let mut s = Spec::new(DIMS, pattern);
    s.dtype = safetensors::Dtype::F32;
    // r = 32: B's rows are whole Q8_0 blocks; r = 8: B falls back to F16, as the converter does.
    s.attn_rank = 32;
    s.expert_rank = 8;
    s.alpha = 64.0;
    s
}

fn load_one(path: &Path) -> Adapter {
    let src = discovery::discover_path(path);
    assert_eq!(src.len(), 1, "{path:?}: {src:?}");
    Adapter::load(&src[0], LayoutOptions::default())
}

/// ΔW = s·B·A from the factors as stored (the tests' own decoder, Q8_0 included).
fn dense(a: &Adapter, d: &lorascope::adapter::layout::Delta) -> Mat<f64> {
    let (ar, ac, av) = support::read_factor(a, d.a);
    let (br, bc, bv) = support::read_factor(a, d.b);
    assert_eq!((ar, bc), (d.rank, d.rank));
    let am = Mat::from_fn(ar, ac, |i, j| av[i * ac + j]);
    let bm = Mat::from_fn(br, bc, |i, j| bv[i * bc + j]);
    (&bm * &am) * faer::Scale(d.scale)
}

fn check_against_dense(a: &Adapter, st: &[DeltaStats]) {
    assert_eq!(st.len(), a.deltas.len());
    for s in st {
        let d = &a.deltas[s.index];
        let m = dense(a, d);
        let mut sig = m.singular_values().unwrap();
        sig.sort_by(|x, y| y.total_cmp(x));
        let fro = sig.iter().map(|x| x * x).sum::<f64>().sqrt();
        let tol = 1e-9 * sig[0].max(1e-300);
        assert!(
            (s.fro_norm - fro).abs() <= tol * 10.0,
            "{:?}: fro {} vs {fro}",
            s.key(),
            s.fro_norm
        );
        for (k, (x, y)) in s.singular_values.iter().zip(&sig).enumerate() {
            assert!(
                (x - y).abs() <= tol * 10.0,
                "{:?} σ{k}: {x} vs {y}",
                s.key()
            );
        }
    }
}

fn write_gguf(dir: &Path, spec: &Spec, ty: GgmlType) -> PathBuf {
    let path = dir.join(format!("adapter-{}.gguf", ty.name().to_lowercase()));
    synth::gguf::write_adapter(&path, spec, ty).unwrap();
    path
}

#[test]
fn statistics_match_dense_in_every_type_attention_and_experts() {
    for pattern in [Pattern::Attention, Pattern::Tinker3d] {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
            let dir = tempfile::tempdir().unwrap();
            let sp = spec(pattern.clone());
            let path = write_gguf(dir.path(), &sp, ty);
            let a = load_one(&path);
            assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
            assert_eq!(a.format(), Some(Format::Gguf));
            assert_eq!(a.unrecognised(), 0, "{:?}", a.notes);
            assert!(a.dtypes().contains(&ty.name()), "{:?}", a.dtypes());
            let experts = pattern == Pattern::Tinker3d;
            let per_layer = 4 + if experts { 3 * DIMS.experts } else { 0 };
            assert_eq!(a.deltas.len(), DIMS.layers * per_layer);
            for d in &a.deltas {
                let r = if d.expert.is_some() {
                    sp.expert_rank
                } else {
                    sp.attn_rank
                };
                assert_eq!(d.rank, r);
                // llama.cpp: alpha / rank.
                assert_eq!(d.scale, sp.alpha / r as f64);
            }
            if experts {
                assert_eq!(a.pattern(), ScanPattern::ExpertsShared3d);
                assert_eq!(a.experts(), Some(DIMS.experts));
            }
            let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
            check_against_dense(&a, &st.deltas);
        }
    }
}

#[test]
fn real_gpt_oss_shapes_are_read_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut sp = Spec::new(Dims::GPT_OSS_20B, Pattern::Tinker3d);
    sp.sparse = true;
    sp.attn_rank = 32;
    sp.expert_rank = 32;
    let path = write_gguf(dir.path(), &sp, GgmlType::Q8_0);
    let a = load_one(&path);
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.deltas.len(), 24 * (4 + 3 * 32));
    let q = a
        .deltas
        .iter()
        .find(|d| d.target.as_str() == "q_proj")
        .unwrap();
    assert_eq!((q.out_dim, q.in_dim, q.rank), (4096, 2880, 32));
    let down = a
        .deltas
        .iter()
        .find(|d| d.target.as_str() == "down_proj")
        .unwrap();
    assert_eq!((down.out_dim, down.in_dim), (2880, 2880));
    assert_eq!(a.dtypes(), ["Q8_0"]);
}

#[test]
fn compare_with_the_safetensors_adapter_it_mirrors_matches_every_delta() {
    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let dir = tempfile::tempdir().unwrap();
        let sp = spec(Pattern::Tinker3d);
        synth::write_adapter(&dir.path().join("st"), &sp).unwrap();
        let g = load_one(&write_gguf(dir.path(), &sp, ty));
        let s = load_one(&dir.path().join("st"));
        let c = compare::compare(&g, &s, &Control::default()).unwrap();
        assert!(
            c.only_a.is_empty() && c.only_b.is_empty(),
            "{:?} {:?}",
            c.only_a,
            c.only_b
        );
        assert_eq!(c.pairs.len(), s.deltas.len());
        // Q8_0 rounds each value to 1/254 of its block's largest: deltas agree to that.
        let tol = if ty == GgmlType::Q8_0 { 1e-2 } else { 1e-12 };
        for p in &c.pairs {
            let cos = p.cosine.unwrap();
            assert!(
                (1.0 - cos).abs() <= tol,
                "{ty:?} {:?} {:?}: cosine {cos}",
                p.layer,
                p.target
            );
            let (na, nb) = (p.fro_norm_a.unwrap(), p.fro_norm_b.unwrap());
            assert!((na - nb).abs() <= tol * nb, "{ty:?}: ‖ΔW‖ {na} vs {nb}");
        }
    }
}

/// s·B·A of a delta, dense (rows × in), from the factors as stored.
fn dense_of(a: &Adapter, key: &DeltaKey) -> Mat<f64> {
    let d = a.deltas.iter().find(|d| d.key() == *key).unwrap();
    dense(a, d)
}

/// Each joined gate_up pair of `c` (`joined` names the GGUF side) against the dense f64 ΔW: the
/// PEFT fused delta and the GGUF's gate (even rows) and up (odd rows) interleaved.
fn joined_pairs_match_dense(p: &Adapter, g: &Adapter, c: &compare::Comparison, joined: &str) {
    use lorascope::adapter::layout::Target;
    for pr in c.pairs.iter().filter(|p| p.target == Target::GateUp) {
        assert_eq!(pr.joined, Some(joined));
        let key = DeltaKey::new(pr.layer, Target::GateUp, pr.expert);
        let m = dense_of(p, &key);
        let (gd, ud) = (
            dense_of(g, &DeltaKey::new(pr.layer, Target::Gate, pr.expert)),
            dense_of(g, &DeltaKey::new(pr.layer, Target::Up, pr.expert)),
        );
        let f = Mat::from_fn(m.nrows(), m.ncols(), |o, i| {
            if o % 2 == 0 {
                gd[(o / 2, i)]
            } else {
                ud[(o / 2, i)]
            }
        });
        let dot: f64 = (0..m.nrows())
            .flat_map(|o| (0..m.ncols()).map(move |i| (o, i)))
            .map(|(o, i)| m[(o, i)] * f[(o, i)])
            .sum();
        let (nm, nf) = (m.norm_l2(), f.norm_l2());
        let (np, ng) = if joined == "b" {
            (pr.fro_norm_a.unwrap(), pr.fro_norm_b.unwrap())
        } else {
            (pr.fro_norm_b.unwrap(), pr.fro_norm_a.unwrap())
        };
        assert!((np - nm).abs() <= 1e-12 * nm, "{key:?}: ‖ΔW‖ {np} vs {nm}");
        assert!((ng - nf).abs() <= 1e-12 * nf, "{key:?}: ‖ΔW‖ {ng} vs {nf}");
        let cos = pr.cosine.unwrap();
        assert!(
            (cos - dot / (nm * nf)).abs() < 1e-12,
            "{key:?}: cosine {cos}"
        );
    }
}

/// A gpt-oss PEFT adapter with fused gate_up experts and its own `export --format gguf`, which
/// holds them as `ffn_gate_exps` (even rows) and `ffn_up_exps` (odd rows): `compare` joins each
/// expert's gate and up into the fused delta (either side first), every delta is matched, and
/// the joined pairs' norms and cosine equal the dense f64 ones, a difference planted in one
/// expert's up rows included. GGUF vs GGUF and PEFT vs PEFT match as before (nothing joined).
#[test]
fn compare_of_a_peft_adapter_with_its_gguf_export_joins_gate_and_up() {
    use lorascope::adapter::layout::Target;
    use lorascope::export::{self, Engine, Options, RankRule};
    let dir = tempfile::tempdir().unwrap();
    let sp = spec(Pattern::PeftExperts { layers: vec![0, 1] });
    synth::write_adapter(&dir.path().join("peft"), &sp).unwrap();
    let p = load_one(&dir.path().join("peft"));
    let out = dir.path().join("adapter.gguf");
    let opts = Options {
        format: export::Format::Gguf { q8_0: false },
        engine: Engine::Llamacpp,
        rank: RankRule::Keep,
        max_rank: None,
        dtype: Some(safetensors::Dtype::F32),
        drop_unservable: false,
        force: false,
        protected: vec![],
    };
    export::export(&p, &out, &opts, &Control::default()).unwrap();
    // Plant a difference: expert 1's up rows of layer 0 times 3 in their first rank column.
    let planted = DeltaKey::new(Some(0), Target::GateUp, Some(1));
    {
        let g = load_one(&out);
        let up = g
            .deltas
            .iter()
            .find(|d| d.key() == DeltaKey::new(Some(0), Target::Up, Some(1)))
            .unwrap();
        let (t, file) = g.tensor_file(up.b.tensor);
        assert_eq!(t.info.dtype, safetensors::Dtype::F32);
        let mut bytes = std::fs::read(&file.path).unwrap();
        let per_expert = up.out_dim * up.rank * 4;
        let start = (file.data_start + t.info.begin) as usize + per_expert;
        for row in 0..up.out_dim {
            let at = start + row * up.rank * 4;
            let v = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            bytes[at..at + 4].copy_from_slice(&(3.0 * v + 0.01).to_le_bytes());
        }
        std::fs::write(&out, bytes).unwrap();
    }
    let g = load_one(&out);
    let fused = p
        .deltas
        .iter()
        .filter(|d| d.target == Target::GateUp)
        .count();
    assert_eq!(fused, 2 * DIMS.experts);
    for (x, y, joined) in [(&p, &g, "b"), (&g, &p, "a")] {
        let c = compare::compare(x, y, &Control::default()).unwrap();
        // Every PEFT delta is matched; the GGUF's others are the zero slices of the experts the
        // source does not adapt (llama.cpp stacks all 32 of the base's).
        let (only_p, only_g) = if joined == "b" {
            (&c.only_a, &c.only_b)
        } else {
            (&c.only_b, &c.only_a)
        };
        assert!(only_p.is_empty(), "{only_p:?}");
        assert!(
            only_g.iter().all(|k| k.expert >= Some(DIMS.experts)),
            "{only_g:?}"
        );
        assert_eq!(c.pairs.len(), p.deltas.len());
        let gate_up: Vec<_> = c
            .pairs
            .iter()
            .filter(|p| p.target == Target::GateUp)
            .collect();
        assert_eq!(gate_up.len(), fused);
        for pr in &c.pairs {
            let key = DeltaKey::new(pr.layer, pr.target.clone(), pr.expert);
            assert!(pr.comparable, "{key:?}");
            let cos = pr.cosine.unwrap();
            if key == planted {
                assert!(cos < 0.99, "the planted difference is found: {cos}");
            } else {
                assert!((1.0 - cos).abs() < 1e-12, "{key:?}: cosine {cos}");
                let (na, nb) = (pr.fro_norm_a.unwrap(), pr.fro_norm_b.unwrap());
                assert!((na - nb).abs() <= 1e-12 * nb, "{key:?}: {na} vs {nb}");
                assert!((1.0 - pr.subspace_similarity.unwrap()).abs() < 1e-9);
            }
            if pr.target != Target::GateUp {
                assert_eq!(pr.joined, None);
            }
        }
        joined_pairs_match_dense(&p, &g, &c, joined);
    }
    // Ranks cut on each half (`--energy`): each half its own best factors, joined all the same.
    let cut = dir.path().join("cut.gguf");
    let opts = Options {
        rank: RankRule::Energy(0.6),
        ..opts
    };
    export::export(&p, &cut, &opts, &Control::default()).unwrap();
    let gc = load_one(&cut);
    let c = compare::compare(&p, &gc, &Control::default()).unwrap();
    assert!(c.only_a.is_empty(), "{:?}", c.only_a);
    joined_pairs_match_dense(&p, &gc, &c, "b");
    for x in [&p, &g] {
        let c = compare::compare(x, x, &Control::default()).unwrap();
        assert!(c.only_a.is_empty() && c.only_b.is_empty());
        assert_eq!(c.pairs.len(), x.deltas.len());
        assert!(c.pairs.iter().all(|p| p.joined.is_none()));
        let keys: Vec<DeltaKey> = c
            .pairs
            .iter()
            .map(|p| DeltaKey::new(p.layer, p.target.clone(), p.expert))
            .collect();
        assert_eq!(keys, x.deltas.iter().map(|d| d.key()).collect::<Vec<_>>());
    }
}

#[derive(Deserialize)]
struct Expected {
    layer: usize,
    target: String,
    expert: Option<usize>,
    rank: usize,
    scale: f64,
    fro_norm: f64,
    singular_values: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    deltas: Vec<Expected>,
}

/// The adapter gguf-py's GGUFWriter wrote as convert_lora_to_gguf.py does, against the deltas
/// of gguf-py's own dequantisation: names, shapes, F32/F16/BF16/Q8_0 data, the alpha, the base.
#[test]
fn gguf_py_writer_fixture_matches_its_own_deltas() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/writers/gguf-gpt-oss");
    let a = load_one(&dir.join("adapter.gguf"));
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.format(), Some(Format::Gguf));
    assert_eq!(a.base_model().as_deref(), Some("openai/gpt-oss-20b"));
    let fx: Fixture =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    // The Q4_0 pair is listed with its type, and its delta says why it is not there.
    assert!(a.dtypes().contains(&"Q4_0".to_string()));
    assert_eq!(a.incomplete.len(), 1);
    assert_eq!(a.incomplete[0].problem, PairProblem::Quantisation);
    assert!(
        a.incomplete[0].why().contains("quantisation not read"),
        "{}",
        a.incomplete[0].why()
    );
    assert_eq!(a.unrecognised(), 2);
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    assert_eq!(st.deltas.len(), fx.deltas.len());
    for e in &fx.deltas {
        let key = DeltaKey::new(Some(e.layer), e.target.as_str(), e.expert);
        let d = a
            .deltas
            .iter()
            .find(|d| d.key() == key)
            .unwrap_or_else(|| panic!("{key:?}"));
        let s = st.deltas.iter().find(|s| s.key() == key).unwrap();
        assert_eq!(d.rank, e.rank, "{key:?}");
        assert_eq!(d.scale, e.scale, "{key:?}");
        let tol = 1e-9 * e.singular_values[0];
        assert!(
            (s.fro_norm - e.fro_norm).abs() <= tol,
            "{key:?} fro {} vs {}",
            s.fro_norm,
            e.fro_norm
        );
        for (k, (x, y)) in s.singular_values.iter().zip(&e.singular_values).enumerate() {
            assert!((x - y).abs() <= tol, "{key:?} σ{k}: {x} vs {y}");
        }
    }
}

/// A cache snapshot and a folder with a safetensors adapter and its GGUF twin: two adapters,
/// the GGUF one named `<folder id>/<file>`; a folder of GGUF files only has no no-safetensors row.
#[test]
fn discovery_finds_gguf_files_beside_and_without_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let sp = spec(Pattern::Attention);
    let twin = dir.path().join("twin");
    synth::write_adapter(&twin, &sp).unwrap();
    synth::gguf::write_adapter(&twin.join("twin-f16.gguf"), &sp, GgmlType::F16).unwrap();
    let only = dir.path().join("only");
    synth::gguf::write_adapter(&only.join("a.gguf"), &sp, GgmlType::Q8_0).unwrap();
    synth::gguf::write_adapter(&only.join("b.gguf"), &sp, GgmlType::BF16).unwrap();
    let root = dir.path().display().to_string();
    let v = discovery::scan(&ScanRequest {
        cache: None,
        paths: vec![dir.path().to_path_buf()],
        layout: Default::default(),
    });
    let ids: Vec<(String, Kind)> = v.iter().map(|a| (a.id.clone(), a.kind)).collect();
    assert_eq!(
        ids,
        [
            (format!("{root}/only/a.gguf"), Kind::Lora),
            (format!("{root}/only/b.gguf"), Kind::Lora),
            (format!("{root}/twin"), Kind::Lora),
            (format!("{root}/twin/twin-f16.gguf"), Kind::Lora),
        ]
    );
    // In a hub cache snapshot too.
    let hub = support::Hub::new();
    hub.add("someone/gpt-oss-lora", &sp);
    let bytes = std::fs::read(twin.join("twin-f16.gguf")).unwrap();
    hub.add_files("someone/gpt-oss-lora-gguf", &[("adapter-f16.gguf", &bytes)]);
    let v = discovery::scan(&ScanRequest {
        cache: Some(hub.root.clone()),
        paths: vec![],
        layout: Default::default(),
    });
    let ids: Vec<&str> = v.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "someone/gpt-oss-lora",
            "someone/gpt-oss-lora-gguf/adapter-f16.gguf"
        ]
    );
    assert!(
        v.iter().all(|a| a.kind == Kind::Lora),
        "{:?}",
        v.iter().map(|a| &a.error).collect::<Vec<_>>()
    );
}

fn write_raw(path: &Path, kv: &[(&str, Value)], tensors: &[WriteTensor]) {
    std::fs::write(path, gguf::file_bytes(kv, tensors)).unwrap();
}

fn f32_tensor(name: &str, ne: &[u64]) -> WriteTensor {
    let n: u64 = ne.iter().product();
    let values: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    WriteTensor {
        name: name.into(),
        ty: GgmlType::F32,
        ne: ne.to_vec(),
        data: gguf::encode(&values, GgmlType::F32),
    }
}

/// A GGUF that is a whole model is `full-weights`; its base model from its key/values.
#[test]
fn a_whole_model_gguf_is_full_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    write_raw(
        &path,
        &[
            ("general.architecture", Value::Str("gpt-oss".into())),
            ("general.type", Value::Str("model".into())),
        ],
        &[
            f32_tensor("blk.0.attn_q.weight", &[32, 64]),
            f32_tensor("blk.0.attn_norm.weight", &[32]),
            f32_tensor("token_embd.weight", &[32, 10]),
        ],
    );
    let a = load_one(&path);
    assert_eq!(a.kind, Kind::FullWeights, "{:?}", a.error);
    assert_eq!(a.pattern(), ScanPattern::FullWeights);
    assert_eq!(a.full.len(), 3);
    assert!(a.targets().contains(&"q_proj".to_string()));
}

/// llama.cpp applies s = 1 when the file has no alpha (or alpha 0), alpha / r otherwise.
#[test]
fn scale_is_one_without_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    let kv = |alpha: Option<f32>| {
        let mut v = vec![
            ("general.architecture", Value::Str("gpt-oss".into())),
            ("general.type", Value::Str("adapter".into())),
            ("adapter.type", Value::Str("lora".into())),
        ];
        if let Some(a) = alpha {
            v.push(("adapter.lora.alpha", Value::F32(a)));
        }
        v
    };
    let ts = [
        f32_tensor("blk.0.attn_v.weight.lora_a", &[32, 4]),
        f32_tensor("blk.0.attn_v.weight.lora_b", &[4, 16]),
    ];
    for (alpha, want) in [(None, 1.0), (Some(0.0), 1.0), (Some(8.0), 2.0)] {
        write_raw(&path, &kv(alpha), &ts);
        let a = load_one(&path);
        assert_eq!(a.deltas.len(), 1, "{:?}", a.error);
        let d = &a.deltas[0];
        assert_eq!(
            (d.out_dim, d.in_dim, d.rank, d.scale),
            (16, 32, 4, want),
            "{alpha:?}"
        );
        assert_eq!(d.target.as_str(), "v_proj");
    }
}

/// The `scan --json` and `inspect --json` contracts of a GGUF adapter: format `gguf`, the GGUF
/// types in `dtypes`, the base model from the key/values; `stats` runs on it.
#[test]
fn scan_inspect_and_stats_contracts() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_gguf(dir.path(), &spec(Pattern::Tinker3d), GgmlType::Q8_0);
    let p = path.to_str().unwrap();
    let out = support::lorascope(&["scan", p, "--json"], dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v.as_array().unwrap()[0];
    assert_eq!(a["kind"], "lora");
    assert_eq!(a["format"], "gguf");
    assert_eq!(a["pattern"], "attention+experts shared-3d");
    assert_eq!(a["base_model"], "openai/gpt-oss-20b");
    assert_eq!(a["dtypes"], serde_json::json!(["F16", "Q8_0"]));
    assert_eq!(a["experts"], 3);
    assert_eq!(a["unrecognised"], 0);
    let out = support::lorascope(&["inspect", p, "--json"], dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("blk.0.ffn_gate_exps.weight.lora_a"), "{text}");
    assert!(text.contains("\"Q8_0\""), "{text}");
    let out = support::lorascope(&["stats", p, "--json"], dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
