//! `export`: every layout family written as a PEFT adapter whose dense ΔW equal the source's;
//! truncations whose errors are the predicted tail energy; what the output cannot carry refused
//! or dropped; the safety rules of writing (never in a cache, never over a non-empty folder
//! without --force, a kill leaves nothing at --out, the source untouched).
//!
//! The output is read back here by PEFT's formulas straight from the file (the safetensors crate
//! and the config), not by lorascope's reader: `lora_A` (r·E, in) row e·r + j and `lora_B`
//! (out, r·E) column j·E + e for `target_parameters`, `base_model.model.{module}` for Linear.

mod support;

use faer::Mat;
use lorascope::adapter::layout::{LayoutOptions, Target};
use lorascope::adapter::{Adapter, Source};
use lorascope::compute::stats::Control;
use lorascope::export::{self, Engine, ExportError, Options, RankRule, Report};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::read_factor;

type Key = (Option<usize>, String, Option<usize>);

fn load(dir: &Path) -> Adapter {
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    let src = Source {
        history: None,
        id: dir.display().to_string(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files,
        revision: None,
        problem: None,
        other_files: vec![],
    };
    let a = Adapter::load(&src, LayoutOptions::default());
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

/// Writes a synthetic adapter into `dir` and reads it.
fn written(dir: &Path, spec: &Spec) -> Adapter {
    synth::write_adapter(dir, spec).unwrap();
    load(dir)
}

fn options() -> Options {
    Options {
        format: export::Format::Peft,
        engine: Engine::Peft,
        rank: RankRule::Keep,
        max_rank: None,
        dtype: None,
        drop_unservable: false,
        force: false,
        protected: vec![],
    }
}

fn run(a: &Adapter, out: &Path, opts: &Options) -> Result<Report, lorascope::Error> {
    export::export(a, out, opts, &Control::default())
}

/// s·B·A of every source delta through lorascope's reader (tested against dense references in
/// tests/math.rs); a gpt-oss expert's separate gate and up become its interleaved gate_up.
fn dense_source(a: &Adapter) -> BTreeMap<Key, Mat<f64>> {
    let mut out = BTreeMap::new();
    // (layer, expert) → [gate, up]
    type Halves = BTreeMap<(Option<usize>, Option<usize>), [Option<Mat<f64>>; 2]>;
    let mut halves = Halves::new();
    for d in &a.deltas {
        let (br, bc, b) = read_factor(a, d.b);
        let (ar, ac, av) = read_factor(a, d.a);
        assert_eq!(bc, ar);
        let m = Mat::from_fn(br, ac, |o, i| {
            d.scale * (0..bc).map(|j| b[o * bc + j] * av[j * ac + i]).sum::<f64>()
        });
        match (&d.target, d.expert) {
            (Target::Gate, Some(_)) => halves.entry((d.layer, d.expert)).or_default()[0] = Some(m),
            (Target::Up, Some(_)) => halves.entry((d.layer, d.expert)).or_default()[1] = Some(m),
            _ => {
                out.insert((d.layer, d.target.to_string(), d.expert), m);
            }
        }
    }
    for ((layer, expert), [g, u]) in halves {
        let first = g.as_ref().or(u.as_ref()).unwrap();
        let (rows, cols) = (first.nrows(), first.ncols());
        let m = Mat::from_fn(2 * rows, cols, |o, i| {
            let half = if o % 2 == 0 { &g } else { &u };
            half.as_ref().map_or(0.0, |h| h[(o / 2, i)])
        });
        out.insert((layer, "gate_up_proj".into(), expert), m);
    }
    out
}

fn f64s(t: &safetensors::tensor::TensorView) -> Vec<f64> {
    match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::BF16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        d => panic!("{d:?}"),
    }
}

/// ΔW of every delta of a written PEFT folder, by PEFT's formulas (scale lora_alpha / r).
fn dense_peft(dir: &Path) -> BTreeMap<Key, Mat<f64>> {
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap()).unwrap();
    let r = cfg["r"].as_u64().unwrap() as usize;
    let s = cfg["lora_alpha"].as_f64().unwrap() / r as f64;
    assert_eq!(cfg["use_rslora"], false);
    let list = |k: &str| -> Vec<String> {
        cfg[k]
            .as_array()
            .map(|v| v.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let (params, modules) = (list("target_parameters"), list("target_modules"));
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for name in st.names() {
        // peft Embedding: lora_embedding_A (r, V), lora_embedding_B (H, r), ΔW = s·(B·A)ᵀ (V, H).
        if let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_embedding_A"))
        {
            assert!(modules.iter().any(|m| m == module), "{module}: {modules:?}");
            let ta = st.tensor(name).unwrap();
            let tb = st
                .tensor(&name.replace("lora_embedding_A", "lora_embedding_B"))
                .unwrap();
            let (a, b) = (f64s(&ta), f64s(&tb));
            let (v, h) = (ta.shape()[1], tb.shape()[0]);
            assert_eq!((ta.shape()[0], tb.shape()[1]), (r, r));
            let m = Mat::from_fn(v, h, |i, c| {
                s * (0..r).map(|j| b[c * r + j] * a[j * v + i]).sum::<f64>()
            });
            let target = module.rsplit('.').next().unwrap().to_string();
            out.insert((None, target, None), m);
            continue;
        }
        let Some(module) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let ta = st.tensor(name).unwrap();
        let tb = st
            .tensor(&name.replace(".lora_A.weight", ".lora_B.weight"))
            .unwrap();
        let (a, b) = (f64s(&ta), f64s(&tb));
        let (rows_a, inn) = (ta.shape()[0], ta.shape()[1]);
        let (outd, cols_b) = (tb.shape()[0], tb.shape()[1]);
        assert_eq!(rows_a, cols_b);
        let layer: Option<usize> = module.split('.').nth(2).and_then(|x| x.parse().ok());
        let experts_module = module.trim_end_matches(".base_layer");
        if experts_module.ends_with("mlp.experts") {
            // ParamWrapper: the inner wrapper (base_layer) holds the first registered parameter.
            let mine: Vec<&String> = params
                .iter()
                .filter(|p| p.rsplit_once('.').unwrap().0 == experts_module)
                .collect();
            let param = match (module.ends_with(".base_layer"), mine.as_slice()) {
                (true, [first, _]) => first,
                (false, [.., last]) => last,
                _ => panic!("{module}: wrappers {mine:?}"),
            };
            let param = param.rsplit_once('.').unwrap().1.to_string();
            let e_count = rows_a / r;
            for e in 0..e_count {
                let m = Mat::from_fn(outd, inn, |o, i| {
                    s * (0..r)
                        .map(|j| b[o * cols_b + j * e_count + e] * a[(e * r + j) * inn + i])
                        .sum::<f64>()
                });
                out.insert((layer, param.clone(), Some(e)), m);
            }
        } else {
            let target = module.rsplit('.').next().unwrap().to_string();
            // gpt-oss's router is no nn.Linear: PEFT wraps its 2-D `weight` (target_parameters).
            let (listed, other) = if target == "router" {
                (&params, &modules)
            } else {
                (&modules, &params)
            };
            let own = if target == "router" {
                format!("{module}.weight")
            } else {
                module.to_string()
            };
            assert!(listed.contains(&own), "{own}: {listed:?}");
            assert!(!other.iter().any(|x| x.starts_with(module)), "{module}");
            let m = Mat::from_fn(outd, inn, |o, i| {
                s * (0..r)
                    .map(|j| b[o * cols_b + j] * a[j * inn + i])
                    .sum::<f64>()
            });
            out.insert((layer, target, None), m);
        }
    }
    out
}

fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let d = (a - b).norm_l2();
    let n = b.norm_l2();
    if n == 0.0 {
        d
    } else {
        d / n
    }
}

/// Every source delta is in the output with the same ΔW; extra output deltas (experts the
/// source does not adapt, packed as zeros) are zero.
fn assert_same(src: &BTreeMap<Key, Mat<f64>>, out: &BTreeMap<Key, Mat<f64>>, tol: f64, what: &str) {
    for (k, m) in src {
        let got = out
            .get(k)
            .unwrap_or_else(|| panic!("{what}: {k:?} missing from the output"));
        let e = rel(got, m);
        assert!(e <= tol, "{what}: {k:?} differs by {e:e}");
    }
    for (k, m) in out {
        if !src.contains_key(k) {
            assert_eq!(
                m.norm_l2(),
                0.0,
                "{what}: {k:?} is not in the source but not zero"
            );
        }
    }
}

#[test]
fn every_layout_family_round_trips_with_equal_dense_deltas() {
    for (what, spec) in support::export_families() {
        let tmp = tempfile::tempdir().unwrap();
        let src_dir = tmp.path().join("src");
        let a = written(&src_dir, &spec);
        let out = tmp.path().join("out");
        // mlx-lm's router LoRA is written too (a 2-D target parameter): nothing is left out.
        let report = run(&a, &out, &options()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let src = dense_source(&a);
        assert!(report.dropped.is_empty(), "{what}: {:?}", report.dropped);
        assert_same(&src, &dense_peft(&out), 1e-6, what);
        assert!(report
            .deltas
            .iter()
            .all(|d| d.relative_error == 0.0 && d.energy_kept == 1.0));
        assert!(
            report.verified.max_difference <= 1e-5,
            "{what}: {:?}",
            report.verified
        );
        // lorascope reads its own output as a PEFT adapter with the source's deltas.
        let back = load(&out);
        assert_eq!(back.format().map(|f| f.as_str()), Some("peft"), "{what}");
    }
}

#[test]
fn the_real_writers_fixtures_round_trip() {
    for name in ["peft-gpt-oss", "mlx-gpt-oss"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/writers")
            .join(name);
        let a = load(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let report = run(&a, &out, &options()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let src = dense_source(&a);
        assert!(report.dropped.is_empty(), "{name}: {:?}", report.dropped);
        assert_same(&src, &dense_peft(&out), 1e-6, name);
        assert!(report.verified.deltas >= src.len(), "{name}");
    }
}

/// A synthetic adapter with extra tensors (F32, values given row-major) and its config edited.
fn written_with(
    dir: &Path,
    spec: &Spec,
    extra: &[(String, Vec<usize>, Vec<f64>)],
    edit: impl Fn(&mut serde_json::Value),
) -> Adapter {
    support::write_with_extra(dir, spec, extra, edit);
    load(dir)
}

/// Values exactly representable in f32, so that references from them are exact.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = synth::Rng::new(seed);
    (0..n).map(|_| (rng.normal() * 0.3) as f32 as f64).collect()
}

/// x (rows × k) · y (k × cols), row-major, times s.
fn matmul(s: f64, x: &[f64], y: &[f64], rows: usize, k: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, c| {
        s * (0..k).map(|j| x[i * k + j] * y[j * cols + c]).sum::<f64>()
    })
}

const VOCAB: usize = 20;

#[test]
fn embedding_and_router_lora_are_written_for_peft_with_the_sources_delta() {
    let (h, e, r) = (Dims::TOY.hidden, Dims::TOY.experts, 2);
    let tmp = tempfile::tempdir().unwrap();

    // mlx-lm (mlx_lm/tuner/lora.py): LoRAEmbedding lora_a (V, r), lora_b (r, H), ΔW (V, H) =
    // scale·lora_a·lora_b; the router is a LoRALinear, ΔW (E, H) = scale·lora_bᵀ·lora_aᵀ.
    let mut spec = support::toy_spec(Pattern::Mlx { layers: 1 });
    spec.attn_rank = r;
    let (ea, eb) = (values(VOCAB * r, 11), values(r * h, 12));
    let mlx = written_with(
        &tmp.path().join("mlx"),
        &spec,
        &[
            (
                "model.embed_tokens.lora_a".into(),
                vec![VOCAB, r],
                ea.clone(),
            ),
            ("model.embed_tokens.lora_b".into(), vec![r, h], eb.clone()),
        ],
        |_| {},
    );
    let scale = spec.alpha;
    let file = std::fs::read(tmp.path().join("mlx/adapters.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&file).unwrap();
    let raw = |name: &str| f64s(&st.tensor(name).unwrap());
    let l = Dims::TOY.layers - 1;
    let (ra, rb) = (
        raw(&format!("model.layers.{l}.mlp.router.lora_a")),
        raw(&format!("model.layers.{l}.mlp.router.lora_b")),
    );
    let transpose = |x: &[f64], rows: usize, cols: usize| -> Vec<f64> {
        (0..rows * cols)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    };
    let want_embed = matmul(scale, &ea, &eb, VOCAB, r, h);
    let want_router = matmul(scale, &transpose(&rb, r, e), &transpose(&ra, h, r), e, r, h);

    // PEFT: Embedding lora_embedding_A (r, V), lora_embedding_B (H, r), ΔW = s·(B·A)ᵀ; the
    // router a 2-D ParamWrapper next to the experts' (lora_A (r, H), lora_B (E, r), ΔW = s·B·A).
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![0] });
    spec.attn_rank = r;
    spec.expert_rank = r;
    let (pa, pb) = (values(r * VOCAB, 21), values(h * r, 22));
    let (qa, qb) = (values(r * h, 23), values(e * r, 24));
    let p = "base_model.model.model.";
    let peft = written_with(
        &tmp.path().join("peft"),
        &spec,
        &[
            (
                format!("{p}embed_tokens.lora_embedding_A"),
                vec![r, VOCAB],
                pa.clone(),
            ),
            (
                format!("{p}embed_tokens.lora_embedding_B"),
                vec![h, r],
                pb.clone(),
            ),
            (
                format!("{p}layers.0.mlp.router.lora_A.weight"),
                vec![r, h],
                qa.clone(),
            ),
            (
                format!("{p}layers.0.mlp.router.lora_B.weight"),
                vec![e, r],
                qb.clone(),
            ),
        ],
        |c| {
            c["target_modules"]
                .as_array_mut()
                .unwrap()
                .push("embed_tokens".into());
            let tp = c["target_parameters"].as_array_mut().unwrap();
            tp.push("0.mlp.router.weight".into());
        },
    );
    let s = spec.alpha / r as f64;
    let want_peft_embed = matmul(
        s,
        &transpose(&pa, r, VOCAB),
        &transpose(&pb, h, r),
        VOCAB,
        r,
        h,
    );
    let want_peft_router = matmul(s, &qb, &qa, e, r, h);

    for (what, a, checks) in [
        (
            "mlx-lm",
            &mlx,
            vec![
                ((None, "embed_tokens", None), want_embed),
                ((Some(l), "router", None), want_router),
            ],
        ),
        (
            "peft",
            &peft,
            vec![
                ((None, "embed_tokens", None), want_peft_embed),
                ((Some(0), "router", None), want_peft_router),
            ],
        ),
    ] {
        let out = tmp.path().join(format!("{what}-out"));
        let report = run(a, &out, &options()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(report.dropped.is_empty(), "{what}: {:?}", report.dropped);
        let got = dense_peft(&out);
        for ((layer, target, expert), want) in &checks {
            let key = (*layer, target.to_string(), *expert);
            let g = got
                .get(&key)
                .unwrap_or_else(|| panic!("{what}: {key:?} not written"));
            assert_eq!(
                (g.nrows(), g.ncols()),
                (want.nrows(), want.ncols()),
                "{what} {key:?}"
            );
            let err = rel(g, want);
            assert!(err <= 1e-6, "{what} {key:?}: {err:e}");
        }
        // Every other delta as well, and the output reads back through lorascope's reader.
        assert_same(&dense_source(a), &got, 1e-6, what);
        let back = dense_source(&load(&out));
        for ((layer, target, expert), want) in &checks {
            let key = (*layer, target.to_string(), *expert);
            assert!(rel(&back[&key], want) <= 1e-6, "{what} {key:?} read back");
        }
        // --rank 1 keeps the embedding's PEFT form (r = 1 for every module).
        let mut opts = options();
        opts.rank = RankRule::Rank(1);
        let r1 = tmp.path().join(format!("{what}-r1"));
        run(a, &r1, &opts).unwrap_or_else(|e| panic!("{what} --rank 1: {e}"));
        let emb = &dense_peft(&r1)[&(None, "embed_tokens".to_string(), None)];
        let want = &checks[0].1;
        let sv = sigma(want);
        let tail = (sv[1..].iter().map(|x| x * x).sum::<f64>()
            / sv.iter().map(|x| x * x).sum::<f64>())
        .sqrt();
        assert!((rel(emb, want) - tail).abs() < 1e-6, "{what} --rank 1");
    }

    // Engines: their rule tables (check --engine) leave out this gpt-oss source's router and
    // embedding LoRA.
    for engine in [Engine::Vllm, Engine::Sglang] {
        let mut opts = options();
        opts.engine = engine;
        let out = tmp.path().join("engine");
        match run(&peft, &out, &opts) {
            Err(lorascope::Error::Export(ExportError::Refused { items })) => {
                assert!(items.iter().any(|d| d.name.contains("router")), "{items:?}");
                assert!(
                    items.iter().any(|d| d.name.contains("embed_tokens")),
                    "{items:?}"
                );
            }
            other => panic!("{engine:?}: {other:?}"),
        }
        assert!(!out.exists());
    }
    let mut opts = options();
    opts.engine = Engine::Vllm;
    opts.drop_unservable = true;
    let out = tmp.path().join("vllm");
    let report = run(&mlx, &out, &opts).unwrap();
    assert_eq!(report.dropped.len(), 2, "{:?}", report.dropped);
    assert!(dense_peft(&out)
        .keys()
        .all(|k| k.1 != "router" && k.1 != "embed_tokens"));
}

/// Dense singular values, descending.
fn sigma(m: &Mat<f64>) -> Vec<f64> {
    let mut s = m.singular_values().unwrap();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

#[test]
fn truncation_errors_are_the_predicted_tail_energy() {
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![1] });
    spec.attn_rank = 4;
    spec.expert_rank = 3;
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let a = written(&src_dir, &spec);
    let src = dense_source(&a);
    for (rule, out_name) in [(RankRule::Rank(2), "k2"), (RankRule::Energy(0.8), "e80")] {
        let out = tmp.path().join(out_name);
        let mut opts = options();
        opts.rank = rule;
        let report = run(&a, &out, &opts).unwrap();
        let got = dense_peft(&out);
        for d in &report.deltas {
            let key = (d.layer, d.target.to_string(), d.expert);
            let (m, g) = (&src[&key], &got[&key]);
            let s = sigma(m);
            let total: f64 = s.iter().map(|x| x * x).sum();
            let tail: f64 = s.iter().skip(d.rank_after).map(|x| x * x).sum();
            let predicted = (tail / total).sqrt();
            assert!(
                (rel(g, m) - predicted).abs() < 1e-6,
                "{key:?}: {} vs {predicted}",
                rel(g, m)
            );
            assert!((d.relative_error - predicted).abs() < 1e-9, "{key:?}");
            assert!((d.energy_kept - (1.0 - tail / total)).abs() < 1e-9);
            if let RankRule::Energy(f) = rule {
                // The smallest rank that keeps f, per delta (experts: the largest of the layer's).
                let need = (1..=s.len())
                    .find(|&k| s.iter().take(k).map(|x| x * x).sum::<f64>() >= f * total)
                    .unwrap();
                assert!(d.rank_after >= need, "{key:?}");
                if d.expert.is_none() {
                    assert_eq!(d.rank_after, need, "{key:?}");
                }
            } else {
                assert_eq!(d.rank_after, 2.min(d.rank_before));
            }
        }
    }
}

#[test]
fn what_the_output_cannot_carry_is_refused_or_dropped_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("router");
    let a = written(&src_dir, &support::toy_spec(Pattern::AttentionRouter));
    let out = tmp.path().join("out");
    match run(&a, &out, &options()) {
        Err(lorascope::Error::Export(ExportError::Refused { items })) => {
            assert!(items.iter().any(|d| d.name.contains("router")), "{items:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
    let mut opts = options();
    opts.drop_unservable = true;
    let report = run(&a, &out, &opts).unwrap();
    assert!(report.dropped.iter().any(|d| d.name.contains("router")));
    assert!(dense_peft(&out).keys().all(|k| k.1 != "router"));

    // SGLang does not read target_parameters: experts are refused, or dropped when asked.
    let experts = tmp.path().join("experts");
    let a = written(
        &experts,
        &support::toy_spec(Pattern::PeftExperts { layers: vec![0] }),
    );
    let mut opts = options();
    opts.engine = Engine::Sglang;
    assert!(matches!(
        run(&a, &tmp.path().join("sg"), &opts),
        Err(lorascope::Error::Export(ExportError::Refused { .. }))
    ));
    opts.drop_unservable = true;
    let report = run(&a, &tmp.path().join("sg"), &opts).unwrap();
    assert!(report.deltas.iter().all(|d| d.expert.is_none()));
    assert!(!report.dropped.is_empty());
}

#[test]
fn vllm_gets_the_max_lora_rank_to_pass_and_one_rank_for_every_module() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![0] });
    spec.attn_rank = 5;
    spec.expert_rank = 3;
    let a = written(&src_dir, &spec);
    let mut opts = options();
    opts.engine = Engine::Vllm;
    let report = run(&a, &tmp.path().join("out"), &opts).unwrap();
    assert_eq!(report.r, 5);
    assert_eq!(report.max_lora_rank, Some(8));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("out/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 5);
    assert_eq!(cfg["lora_alpha"], 5);
    assert_eq!(cfg["rank_pattern"], serde_json::json!({}));
    assert_eq!(cfg["lora_dropout"], 0.0);
}

/// An exported adapter's factors are zero-padded to one rank (experts r = 3 in an r = 5 output):
/// `stats` of the output gives every delta's singular values as a dense f64 SVD of its ΔW does.
#[test]
fn stats_of_a_zero_padded_export_match_its_dense_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![0, 1] });
    spec.attn_rank = 5;
    spec.expert_rank = 3;
    let a = written(&tmp.path().join("src"), &spec);
    let mut opts = options();
    opts.engine = Engine::Vllm;
    let out = tmp.path().join("out");
    run(&a, &out, &opts).unwrap();
    let back = load(&out);
    let st = lorascope::compute::stats::compute(
        &back,
        &lorascope::compute::stats::Filter::default(),
        &Control::default(),
    )
    .unwrap();
    let dense = dense_peft(&out);
    let mut padded = 0;
    for d in &st.deltas {
        let key = (d.layer, d.target.to_string(), d.expert);
        let want = sigma(&dense[&key]);
        padded += usize::from(d.expert.is_some());
        assert_eq!(d.rank, 5, "{key:?}");
        for (i, y) in want.iter().enumerate() {
            let x = d.singular_values.get(i).copied().unwrap_or(0.0);
            assert!(
                (x - y).abs() <= 1e-9 * want[0],
                "{key:?} σ{i}: {x} vs dense {y}"
            );
        }
    }
    assert!(padded > 0, "no expert delta");
}

#[test]
fn bf16_output_is_verified_within_its_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let a = written(
        &src_dir,
        &support::toy_spec(Pattern::PeftExperts { layers: vec![0] }),
    );
    let mut opts = options();
    opts.dtype = Some(Dtype::BF16);
    let report = run(&a, &tmp.path().join("out"), &opts).unwrap();
    assert_eq!(report.dtype, "BF16");
    assert!(report.verified.max_difference <= report.verified.tolerance);
    assert_same(
        &dense_source(&a),
        &dense_peft(&tmp.path().join("out")),
        2e-2,
        "bf16",
    );
}

#[test]
fn export_never_writes_into_a_cache_over_a_folder_or_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let a = written(&src_dir, &support::toy_spec(Pattern::Attention));
    let before = support::fingerprint(&src_dir);
    let refused = |out: &Path, opts: &Options| match run(&a, out, opts) {
        Err(lorascope::Error::Export(ExportError::Out { why, .. })) => why,
        other => panic!("{}: {other:?}", out.display()),
    };
    // Inside a cache, also through `..` and a link.
    let cache = tmp.path().join("hub");
    std::fs::create_dir_all(cache.join("models--x--y")).unwrap();
    let mut opts = options();
    opts.protected = vec![cache.clone()];
    assert!(refused(&cache.join("models--x--y/out"), &opts).contains("cache"));
    assert!(refused(&tmp.path().join("src/../hub/new"), &opts).contains("cache"));
    std::os::unix::fs::symlink(&cache, tmp.path().join("link")).unwrap();
    assert!(refused(&tmp.path().join("link/new"), &opts).contains("cache"));
    // Inside the source, or the source itself.
    assert!(refused(&src_dir.join("out"), &opts).contains("source"));
    assert!(refused(&src_dir, &options()).contains("source"));
    // A non-empty folder without --force; with it, replaced whole.
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    assert!(refused(&out, &options()).contains("--force"));
    assert!(out.join("keep.txt").exists());
    let mut force = options();
    force.force = true;
    run(&a, &out, &force).unwrap();
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("adapter_model.safetensors").exists());
    // A file is not a folder.
    std::fs::write(tmp.path().join("file"), b"x").unwrap();
    assert!(refused(&tmp.path().join("file"), &force).contains("not a folder"));
    // Nothing of the staging is left beside --out, and the source is as it was.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lorascope-export"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(support::fingerprint(&src_dir), before);
}

#[test]
fn a_kill_while_writing_leaves_no_out_and_the_cli_reports_in_json() {
    let home = tempfile::tempdir().unwrap();
    let src_dir = home.path().join("src");
    synth::write_adapter(
        &src_dir,
        &support::toy_spec(Pattern::PeftExperts { layers: vec![0, 1] }),
    )
    .unwrap();
    let out = home.path().join("out");
    let args = [
        "export",
        src_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    support::kill_when_staged(home.path(), &args, "README.md");
    assert!(!out.exists(), "a killed export left --out");

    let o = support::lorascope_at_home(
        home.path(),
        &[
            "export",
            src_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rank",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for field in [
        "source",
        "out",
        "format",
        "deltas",
        "dropped",
        "bytes_before",
        "bytes_after",
    ] {
        assert!(j.get(field).is_some(), "{field}");
    }
    assert_eq!(j["format"], "peft");
    let d = &j["deltas"][0];
    for field in [
        "layer",
        "target",
        "expert",
        "rank_before",
        "rank_after",
        "energy_kept",
        "relative_error",
    ] {
        assert!(d.get(field).is_some(), "{field}");
    }
    // A second run refuses the now non-empty folder, exit non-zero with the reason.
    let o = support::lorascope_at_home(
        home.path(),
        &[
            "export",
            src_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

/// `check --engine E` of a written adapter, through the CLI: (exit status, its JSON).
fn check_cli(out: &Path, engine: &str) -> (bool, serde_json::Value) {
    let home = tempfile::tempdir().unwrap();
    let o = support::lorascope_at_home(
        home.path(),
        &["check", out.to_str().unwrap(), "--engine", engine, "--json"],
    );
    let j = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), j)
}

#[test]
fn every_family_exported_for_an_engine_passes_that_engines_check() {
    let fixtures = ["peft-gpt-oss", "mlx-gpt-oss"].map(|n| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/writers")
            .join(n)
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut sources: Vec<(String, Adapter)> = fixtures
        .iter()
        .map(|d| (d.display().to_string(), load(d)))
        .collect();
    for (i, (what, spec)) in support::export_families().into_iter().enumerate() {
        sources.push((what.into(), written(&tmp.path().join(i.to_string()), &spec)));
    }
    for (what, a) in &sources {
        for (engine, name) in [(Engine::Vllm, "vllm"), (Engine::Sglang, "sglang")] {
            let out = tmp
                .path()
                .join(format!("out-{name}-{}", sources_index(&sources, what)));
            let mut opts = options();
            opts.engine = engine;
            opts.drop_unservable = true;
            run(a, &out, &opts).unwrap_or_else(|e| panic!("{what} for {name}: {e}"));
            let (ok, j) = check_cli(&out, name);
            assert!(ok, "{what} for {name}: check says {j:#}");
            let verdict = &j[0]["serving"][name]["verdict"];
            assert_eq!(verdict, "ok", "{what} for {name}: {j:#}");
        }
    }
}

fn sources_index(sources: &[(String, Adapter)], what: &str) -> usize {
    sources.iter().position(|(w, _)| w == what).unwrap()
}

#[test]
fn vllm_gets_the_missing_side_of_a_one_sided_expert_layer_as_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let a = written(
        &src_dir,
        &support::toy_spec(Pattern::PeftExperts { layers: vec![1] }),
    );
    // Keep gate_up only (experts.base_layer); the config still names both, as PEFT wrote it.
    let file = src_dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.contains("experts.lora_"))
        .collect();
    let one_sided = safetensors::serialize(kept, None).unwrap();
    drop(a);
    std::fs::write(&file, one_sided).unwrap();
    let a = load(&src_dir);
    assert!(
        a.deltas.iter().all(|d| d.target != Target::Down),
        "{:?}",
        a.deltas
            .iter()
            .map(|d| (&d.module, d.target.as_str()))
            .collect::<Vec<_>>()
    );
    let (_, j) = check_cli(&src_dir, "vllm");
    assert_eq!(j[0]["serving"]["vllm"]["verdict"], "error", "{j:#}");

    let out = tmp.path().join("out");
    let mut opts = options();
    opts.engine = Engine::Vllm;
    let report = run(&a, &out, &opts).unwrap();
    // The report lists the source's deltas only and says what it added; the written down_proj
    // is zero.
    assert!(report.deltas.iter().all(|d| d.target != Target::Down));
    assert!(
        report.notes.len() == 1 && report.notes[0].starts_with("layer 1: down_proj"),
        "{:?}",
        report.notes
    );
    let written = dense_peft(&out);
    let downs: Vec<_> = written.iter().filter(|(k, _)| k.1 == "down_proj").collect();
    let gate_ups = written.keys().filter(|k| k.1 == "gate_up_proj").count();
    assert!(gate_ups >= 4);
    assert_eq!(downs.len(), gate_ups);
    assert!(downs.iter().all(|(_, m)| m.norm_l2() == 0.0));
    let mut src = dense_source(&a);
    src.retain(|k, _| k.1 != "down_proj");
    let mut got = written.clone();
    got.retain(|k, _| k.1 != "down_proj");
    assert_same(&src, &got, 1e-6, "one-sided");
    let (_, j) = check_cli(&out, "vllm");
    assert_eq!(j[0]["serving"]["vllm"]["verdict"], "ok", "{j:#}");
    // For PEFT itself nothing is added.
    let peft_out = tmp.path().join("peft");
    run(&a, &peft_out, &options()).unwrap();
    assert!(dense_peft(&peft_out).keys().all(|k| k.1 != "down_proj"));
}

#[test]
fn a_router_lora_vllm_refuses_is_left_out_by_the_rule_that_says_so() {
    // mlx-lm's router LoRA on gpt-oss: vLLM's rule table says refused (vllm.router-lora).
    let tmp = tempfile::tempdir().unwrap();
    let a = written(
        &tmp.path().join("src"),
        &support::toy_spec(Pattern::Mlx { layers: 1 }),
    );
    let mut opts = options();
    opts.engine = Engine::Vllm;
    match run(&a, &tmp.path().join("out"), &opts) {
        Err(lorascope::Error::Export(ExportError::Refused { items })) => {
            assert!(items.iter().any(|d| d.name.contains("router")), "{items:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn an_adapter_trained_on_a_changed_base_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    synth::write_adapter(&src_dir, &support::toy_spec(Pattern::Attention)).unwrap();
    let cfg_path = src_dir.join("adapter_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["init_lora_weights"] = "pissa".into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let a = load(&src_dir);
    for engine in [Engine::Peft, Engine::Vllm] {
        let mut opts = options();
        opts.engine = engine;
        opts.drop_unservable = true;
        match run(&a, &tmp.path().join("out"), &opts) {
            Err(lorascope::Error::Export(ExportError::Refused { items })) => {
                assert!(items[0].reason.contains("pissa"), "{items:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
