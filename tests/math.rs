//! The math core against a dense f64 reference on toy shapes, for every layout.
//!
//! The reference is independent of lorascope's reader and layout code: it reads the file with the
//! safetensors crate, materialises ΔW by PEFT's / Tinker's formulas from the tensor names, and takes
//! a dense SVD.

use faer::Mat;
use lorascope::adapter::layout::{LayoutOptions, LoraBLayout};
use lorascope::adapter::{Adapter, Source};
use lorascope::compute::compare;
use lorascope::compute::stats::{self, Control, DeltaStats, Filter};
use lorascope::synth::{self, Damage, DamageKind, Dims, Pattern, Spec};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

type Key = (Option<usize>, String, Option<usize>);

/// The statistics' delta identity in the dense references' terms.
fn key(d: &DeltaStats) -> Key {
    (d.layer, d.target.to_string(), d.expert)
}

fn load(dir: &Path, layout: LayoutOptions) -> Adapter {
    let src = Source {
        history: None,
        id: "test".into(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: vec![safetensors_in(dir)],
        revision: None,
        problem: None,
        other_files: vec![],
    };
    let a = Adapter::load(&src, layout);
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

/// The one safetensors file of a synthetic adapter (its name depends on the writer).
fn safetensors_in(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .expect("a safetensors file")
}

fn to_f64(dtype: Dtype, data: &[u8]) -> Vec<f64> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        d => panic!("{d:?}"),
    }
}

/// Scale the way PEFT computes it for a module, straight from the spec.
fn scale_of(spec: &Spec, module: &str, default_r: usize) -> (usize, f64) {
    let r = spec
        .rank_pattern
        .iter()
        .find(|(k, _)| module.ends_with(k.as_str()))
        .map_or(default_r, |x| x.1);
    let alpha = spec
        .alpha_pattern
        .iter()
        .find(|(k, _)| module.ends_with(k.as_str()))
        .map_or(spec.alpha, |x| x.1);
    let s = if spec.rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    };
    (r, s)
}

/// Dense ΔW of every delta, keyed like lorascope's deltas, built from names and formulas.
fn dense_reference(dir: &Path, spec: &Spec) -> BTreeMap<Key, Mat<f64>> {
    dense_reference_of(dir, spec, |_| true)
}

/// The same for the modules whose name `keep` accepts (real shapes are slow to densify).
fn dense_reference_of(
    dir: &Path,
    spec: &Spec,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<Key, Mat<f64>> {
    let bytes = std::fs::read(safetensors_in(dir)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| {
        let t = st.tensor(name).unwrap();
        (to_f64(t.dtype(), t.data()), t.shape().to_vec())
    };
    let mut out = BTreeMap::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    for a_name in names.iter().filter(|n| n.ends_with(".lora_a") && keep(n)) {
        // mlx-lm (mlx_lm/tuner/lora.py fuse): 2D ΔW = scale·lora_bᵀ·lora_aᵀ with lora_a (in, r),
        // lora_b (r, out); SwitchLinear ΔW_e = scale·lora_b[e]·lora_a[e], (E, out, r)·(E, r, in).
        let (a, sa) = get(a_name);
        let (b, sb) = get(&format!("{}lora_b", a_name.trim_end_matches("lora_a")));
        let module = a_name.trim_end_matches(".lora_a");
        let layer: usize = module.split('.').nth(2).unwrap().parse().unwrap();
        let last = module.rsplit('.').next().unwrap().to_string();
        let s = spec.alpha;
        if sa.len() == 2 {
            let (inn, r, out_d) = (sa[0], sa[1], sb[1]);
            let m = Mat::from_fn(out_d, inn, |o, i| {
                s * (0..r).map(|k| b[k * out_d + o] * a[i * r + k]).sum::<f64>()
            });
            out.insert((Some(layer), last, None), m);
        } else {
            let (r, inn, out_d) = (sa[1], sa[2], sb[1]);
            for e in 0..sa[0] {
                let m = Mat::from_fn(out_d, inn, |o, i| {
                    s * (0..r)
                        .map(|k| b[e * out_d * r + o * r + k] * a[e * r * inn + k * inn + i])
                        .sum::<f64>()
                });
                out.insert((Some(layer), last.clone(), Some(e)), m);
            }
        }
    }
    for a_name in names
        .iter()
        .filter(|n| n.ends_with("lora_A.weight") && keep(n))
    {
        let b_name = a_name.replace("lora_A", "lora_B");
        let (a, sa) = get(a_name);
        let (b, sb) = get(&b_name);
        let module = a_name
            .trim_start_matches("base_model.model.")
            .trim_end_matches(".lora_A.weight");
        let layer: usize = module.split('.').nth(2).unwrap().parse().unwrap();
        let last = module.rsplit('.').next().unwrap();
        let de = spec.dims.experts;
        if module.contains("experts.w") {
            // Tinker: ΔW_e = s·B[e or 0]·A[e or 0].
            let target = match last {
                "w1" => "gate_proj",
                "w2" => "down_proj",
                _ => "up_proj",
            };
            let (_, s) = scale_of(spec, module, spec.expert_rank);
            let (r, inn, out_d) = (sa[1], sa[2], sb[1]);
            for e in 0..de {
                let ea = if sa[0] == 1 { 0 } else { e };
                let eb = if sb[0] == 1 { 0 } else { e };
                let m = Mat::from_fn(out_d, inn, |o, i| {
                    s * (0..r)
                        .map(|k| b[eb * out_d * r + o * r + k] * a[ea * r * inn + k * inn + i])
                        .sum::<f64>()
                });
                out.insert((Some(layer), target.to_string(), Some(e)), m);
            }
        } else if module.ends_with("experts") || module.ends_with("experts.base_layer") {
            // PEFT ParamWrapper: A.reshape(E, r, in), B.reshape(out, r, E) (or (out, E, r)).
            let target = if last == "base_layer" {
                "gate_up_proj"
            } else {
                "down_proj"
            };
            let owner = module.trim_end_matches(".base_layer");
            let (r, s) = scale_of(spec, &format!("{owner}.{target}"), spec.expert_rank);
            let (inn, out_d) = (sa[1], sb[0]);
            assert_eq!(sa[0], r * de);
            for e in 0..de {
                let m = Mat::from_fn(out_d, inn, |o, i| {
                    s * (0..r)
                        .map(|k| {
                            let col = match spec.lora_b_layout {
                                LoraBLayout::StrideE => k * de + e,
                                LoraBLayout::ExpertMajor => e * r + k,
                            };
                            b[o * r * de + col] * a[(e * r + k) * inn + i]
                        })
                        .sum::<f64>()
                });
                out.insert((Some(layer), target.to_string(), Some(e)), m);
            }
        } else if let Some((list, e)) = module
            .rsplit_once('.')
            .filter(|(l, _)| l.ends_with("_projs"))
        {
            // Unsloth's module list `experts.gate_up_projs.{e}`: an ordinary PEFT Linear LoRA.
            let target = list.rsplit('.').next().unwrap().trim_end_matches('s');
            let (r, inn, out_d) = (sa[0], sa[1], sb[0]);
            let s = spec.alpha / r as f64;
            let m = Mat::from_fn(out_d, inn, |o, i| {
                s * (0..r).map(|k| b[o * r + k] * a[k * inn + i]).sum::<f64>()
            });
            let e: usize = e.parse().unwrap();
            out.insert((Some(layer), target.to_string(), Some(e)), m);
        } else {
            let (r, s) = scale_of(spec, module, spec.attn_rank);
            assert_eq!(sa[0], r);
            let (inn, out_d) = (sa[1], sb[0]);
            let m = Mat::from_fn(out_d, inn, |o, i| {
                s * (0..r).map(|k| b[o * r + k] * a[k * inn + i]).sum::<f64>()
            });
            out.insert((Some(layer), last.to_string(), None), m);
        }
    }
    out
}

fn dense_sigma(m: &Mat<f64>) -> Vec<f64> {
    let mut s = m.singular_values().unwrap();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// The statistics' definitions, written out again for the reference.
fn check_stats(got: &DeltaStats, dense: &Mat<f64>) {
    let sig = dense_sigma(dense);
    let r = got.rank;
    let s1 = sig[0];
    let tol = 1e-6;
    let close = |x: f64, y: f64, what: &str| {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1e-300),
            "{what}: {x} vs dense {y} at {:?}",
            key(got)
        )
    };
    let fro = (0..dense.nrows())
        .flat_map(|i| (0..dense.ncols()).map(move |j| (i, j)))
        .map(|(i, j)| dense[(i, j)].powi(2))
        .sum::<f64>()
        .sqrt();
    close(got.fro_norm, fro, "fro_norm");
    close(got.spectral_norm, s1, "spectral_norm");
    assert_eq!(got.singular_values.len(), r);
    for (k, (x, y)) in got.singular_values.iter().zip(&sig).enumerate() {
        assert!((x - y).abs() <= tol * s1, "σ{k}: {x} vs {y}");
    }
    let top: Vec<f64> = sig[..r].to_vec();
    let sum: f64 = top.iter().sum();
    let erank = (-top
        .iter()
        .filter(|x| **x > 0.0)
        .map(|x| (x / sum) * (x / sum).ln())
        .sum::<f64>())
    .exp();
    close(got.effective_rank, erank, "effective_rank");
    close(got.stable_rank, fro * fro / (s1 * s1), "stable_rank");
    assert_eq!(
        got.numerical_rank,
        top.iter().filter(|x| **x > 1e-6 * s1).count()
    );
    let e2: f64 = top.iter().map(|x| x * x).sum();
    let erank_q = |q: f64| {
        let mut acc = 0.0;
        top.iter()
            .position(|x| {
                acc += x * x;
                acc >= q * e2 * (1.0 - 1e-12)
            })
            .unwrap()
            + 1
    };
    assert_eq!(got.energy_rank_90, erank_q(0.9));
    assert_eq!(got.energy_rank_99, erank_q(0.99));
}

/// Writes the spec, computes stats, and checks every delta against the dense reference.
fn check_layout(spec: &Spec) -> Vec<DeltaStats> {
    let dir = tempfile::tempdir().unwrap();
    let g = synth::write_adapter(dir.path(), spec).unwrap();
    let opts = LayoutOptions {
        lora_b_layout: spec.lora_b_layout,
        ..Default::default()
    };
    let a = load(dir.path(), opts);
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let dense = dense_reference(dir.path(), spec);
    assert_eq!(st.deltas.len(), dense.len(), "delta count");
    assert_eq!(st.deltas.len(), g.planted.len(), "planted count");
    for d in &st.deltas {
        let m = dense
            .get(&key(d))
            .unwrap_or_else(|| panic!("no dense delta {:?}", key(d)));
        check_stats(d, m);
    }
    st.deltas
}

fn spec(pattern: Pattern) -> Spec {
    let mut s = Spec::new(Dims::TOY, pattern);
    s.attn_rank = 4;
    s.expert_rank = 3;
    s
}

#[test]
fn attention_pairs_match_dense_in_every_dtype() {
    for dtype in [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16] {
        let mut s = spec(Pattern::Attention);
        s.dtype = dtype;
        check_layout(&s);
    }
}

#[test]
fn peft_per_expert_stride_e_matches_dense() {
    let s = spec(Pattern::PeftExperts { layers: vec![0, 2] });
    let st = check_layout(&s);
    let experts = st.iter().filter(|d| d.expert.is_some()).count();
    assert_eq!(experts, 2 * 2 * Dims::TOY.experts);
    assert!(st
        .iter()
        .filter(|d| d.expert.is_some())
        .all(|d| d.rank == 3));
}

#[test]
fn peft_per_expert_expert_major_matches_dense_only_when_read_that_way() {
    let mut s = spec(Pattern::PeftExperts { layers: vec![1] });
    s.lora_b_layout = LoraBLayout::ExpertMajor;
    check_layout(&s);
    // Read with the default stride-E order, the same file gives other (wrong) spectra.
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let dense = dense_reference(dir.path(), &s);
    let d = st.deltas.iter().find(|d| d.expert == Some(1)).unwrap();
    let want = dense_sigma(&dense[&key(d)]);
    assert!((d.spectral_norm - want[0]).abs() > 1e-6 * want[0]);
}

#[test]
fn tinker_3d_broadcast_matches_dense() {
    let st = check_layout(&spec(Pattern::Tinker3d));
    assert_eq!(
        st.iter().filter(|d| d.expert.is_some()).count(),
        Dims::TOY.layers * 3 * Dims::TOY.experts
    );
}

#[test]
fn unsloth_module_list_matches_dense() {
    let st = check_layout(&spec(Pattern::UnslothExperts { layers: vec![1] }));
    let d = Dims::TOY;
    let expert_deltas = st.iter().filter(|x| x.expert.is_some()).count();
    assert_eq!(expert_deltas, 2 * d.experts, "gate_up and down per expert");
}

#[test]
fn mlx_transposed_and_switch_layers_match_dense() {
    for dtype in [Dtype::F32, Dtype::BF16] {
        let mut s = spec(Pattern::Mlx { layers: 2 });
        s.dtype = dtype;
        s.alpha = 20.0; // mlx-lm's default scale
        let st = check_layout(&s);
        assert!(st.iter().any(|x| x.target == "router"), "router delta");
        assert!(st.iter().all(|x| x.layer >= Some(1)), "last 2 layers only");
    }
}

/// Issue 23: one module's pair broken (a lone lora_A, or ranks that disagree) in each layout:
/// every other delta matches the dense ΔW of the healthy twin's file, and only the broken
/// module's deltas are missing.
#[test]
fn every_other_delta_of_an_adapter_with_an_incomplete_pair_matches_dense() {
    let cases: [(Pattern, usize, &str, Option<usize>); 5] = [
        (Pattern::Attention, 1, "q_proj", None),
        (
            Pattern::PeftExperts { layers: vec![1, 2] },
            2,
            "down_proj",
            None,
        ),
        (
            Pattern::UnslothExperts { layers: vec![1] },
            1,
            "gate_up_proj",
            Some(2),
        ),
        (Pattern::Tinker3d, 1, "gate_proj", Some(0)),
        (Pattern::Mlx { layers: 2 }, 2, "up_proj", Some(1)),
    ];
    for (pattern, layer, target, expert) in cases {
        for kind in [DamageKind::MissingB, DamageKind::RankMismatch] {
            let ctx = format!("{pattern:?} {kind:?}");
            let twin = spec(pattern.clone());
            let mut broken = twin.clone();
            broken.damage = vec![Damage::new(Some(layer), Some(target), expert, kind)];
            let (t, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            synth::write_adapter(t.path(), &twin).unwrap();
            synth::write_adapter(b.path(), &broken).unwrap();
            let a = load(b.path(), LayoutOptions::default());
            assert_eq!(a.incomplete.len(), 1, "{ctx}");
            let module = &a.incomplete[0].module;
            let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
            // The dense reference is the twin's file: the broken file is never densified.
            let mut dense = dense_reference(t.path(), &twin);
            let ok = load(t.path(), LayoutOptions::default());
            let gone: Vec<Key> = ok
                .deltas
                .iter()
                .filter(|d| &d.module == module)
                .map(|d| (d.layer, d.target.to_string(), d.expert))
                .collect();
            assert!(!gone.is_empty(), "{ctx}");
            for k in &gone {
                dense
                    .remove(k)
                    .unwrap_or_else(|| panic!("{ctx}: no dense delta {k:?}"));
            }
            assert_eq!(st.deltas.len(), dense.len(), "{ctx}");
            for d in &st.deltas {
                let m = dense
                    .get(&key(d))
                    .unwrap_or_else(|| panic!("{ctx}: {:?}", key(d)));
                check_stats(d, m);
            }
        }
    }
}

#[test]
fn rslora_and_rank_alpha_patterns_match_dense() {
    let mut s = spec(Pattern::Attention);
    s.rslora = true;
    s.rank_pattern = vec![("q_proj".into(), 6)];
    s.alpha_pattern = vec![("v_proj".into(), 3.0)];
    let st = check_layout(&s);
    assert!(st
        .iter()
        .filter(|d| d.target == "q_proj")
        .all(|d| d.rank == 6));
    let v = st.iter().find(|d| d.target == "v_proj").unwrap();
    assert!(
        (v.scale - 3.0 / 2.0).abs() < 1e-12,
        "rsLoRA alpha/sqrt(r) = 3/2"
    );
}

#[test]
fn unaligned_data_is_copied_not_misread() {
    let mut s = spec(Pattern::PeftExperts { layers: vec![0] });
    s.aligned = false;
    check_layout(&s);
}

#[test]
fn planted_spectra_are_recovered() {
    let mut s = spec(Pattern::PeftExperts { layers: vec![2] });
    s.dtype = Dtype::F64;
    let dir = tempfile::tempdir().unwrap();
    let g = synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    for p in &g.planted {
        let d = st
            .deltas
            .iter()
            .find(|d| key(d) == (Some(p.layer), p.target.clone(), p.expert))
            .unwrap();
        for (x, y) in d.singular_values.iter().zip(&p.sigma) {
            assert!((x - y * d.scale.abs()).abs() < 1e-10 * y * d.scale.abs());
        }
    }
}

/// One 2D pair in F64 with the given factors.
fn write_pair(dir: &Path, b: &[f64], a: &[f64], out: usize, inn: usize, r: usize, alpha: f64) {
    let t = |name: &str, shape: Vec<usize>, v: &[f64]| synth::TensorData {
        name: name.into(),
        dtype: Dtype::F64,
        shape,
        bytes: Some(synth::encode(v, Dtype::F64)),
    };
    let tensors = vec![
        t(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            vec![r, inn],
            a,
        ),
        t(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            vec![out, r],
            b,
        ),
    ];
    std::fs::create_dir_all(dir).unwrap();
    synth::write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, true).unwrap();
    let cfg = format!(r#"{{"r": {r}, "lora_alpha": {alpha}}}"#);
    std::fs::write(dir.join("adapter_config.json"), cfg).unwrap();
}

fn pair_stats(b: &[f64], a: &[f64], out: usize, inn: usize, r: usize) -> (DeltaStats, Mat<f64>) {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), b, a, out, inn, r, r as f64);
    let ad = load(dir.path(), LayoutOptions::default());
    let st = stats::compute(&ad, &Filter::default(), &Control::default()).unwrap();
    let dense = Mat::from_fn(out, inn, |o, i| {
        (0..r).map(|k| b[o * r + k] * a[k * inn + i]).sum()
    });
    (st.deltas[0].clone(), dense)
}

#[test]
fn graded_factors_are_accurate_on_both_paths() {
    // σ spans 1 … 2e-6 (Cholesky-QR; off the 1e-6 rank threshold) and 1 … 1e-10 (its Gram loses the small directions:
    // the Householder fallback must take over).
    for sig in [
        [1.0, 1e-2, 1e-3, 1e-5, 2e-6],
        [1.0, 1e-3, 3e-6, 1e-8, 1e-10],
    ] {
        graded(sig);
    }
}

fn graded(sig: [f64; 5]) {
    let (out, inn, r) = (20, 14, 5);
    let mut rng = synth::Rng::new(7);
    let u = synth::orthonormal(&mut rng, out, r);
    let v = synth::orthonormal(&mut rng, inn, r);
    // B = U·diag(σ) (graded columns), A = Vᵀ.
    let b: Vec<f64> = (0..out * r).map(|i| u[i] * sig[i % r]).collect();
    let a: Vec<f64> = (0..r * inn).map(|i| v[(i % inn) * r + i / inn]).collect();
    let (d, dense) = pair_stats(&b, &a, out, inn, r);
    check_stats(&d, &dense);
    for (x, y) in d.singular_values.iter().zip(sig) {
        assert!((x - y).abs() < 1e-9, "{x} vs {y}");
    }
}

#[test]
fn all_zero_delta_gives_zeros_not_nan() {
    let (out, inn, r) = (8, 6, 3);
    let mut rng = synth::Rng::new(3);
    let a: Vec<f64> = (0..r * inn).map(|_| rng.normal()).collect();
    let (d, _) = pair_stats(&vec![0.0; out * r], &a, out, inn, r);
    for x in [d.fro_norm, d.spectral_norm, d.effective_rank, d.stable_rank] {
        assert_eq!(x, 0.0);
    }
    assert_eq!(
        (d.numerical_rank, d.energy_rank_90, d.energy_rank_99),
        (0, 0, 0)
    );
    assert!(d.singular_values.iter().all(|x| *x == 0.0));
}

#[test]
fn rank_deficient_factors_match_dense() {
    // B has two equal columns: rank 2 of 3.
    let (out, inn, r) = (9, 7, 3);
    let mut rng = synth::Rng::new(11);
    let mut b: Vec<f64> = (0..out * r).map(|_| rng.normal()).collect();
    for o in 0..out {
        b[o * r + 2] = b[o * r + 1];
    }
    let a: Vec<f64> = (0..r * inn).map(|_| rng.normal()).collect();
    let (d, dense) = pair_stats(&b, &a, out, inn, r);
    check_stats(&d, &dense);
    assert_eq!(d.numerical_rank, 2);
}

/// Zero-padded factors (export's one rank, Unsloth's and Tinker's mixed ranks) and factors with
/// unused rank (zero columns of B, zero rows of A, dependent columns): their R comes from the
/// Gram (zero columns set aside, or its eigendecomposition), at the accuracy of a full-rank one.
#[test]
fn zero_padded_and_rank_deficient_factors_match_dense() {
    let (out, inn, r) = (20, 14, 8);
    let mut rng = synth::Rng::new(5);
    let mut b: Vec<f64> = (0..out * r).map(|_| rng.normal()).collect();
    let mut a: Vec<f64> = (0..r * inn).map(|_| rng.normal()).collect();
    let zero_b_cols = |b: &mut Vec<f64>, from: usize| {
        for o in 0..out {
            for k in from..r {
                b[o * r + k] = 0.0;
            }
        }
    };
    // 5 of 8 columns of B zero (B alone padded), then A's matching rows zero too (both padded).
    zero_b_cols(&mut b, 3);
    let cases = {
        let mut both = a.clone();
        both[3 * inn..].iter_mut().for_each(|x| *x = 0.0);
        // Column 1 of B equals column 0 as well: dependent and zero columns together.
        let mut dep = b.clone();
        for o in 0..out {
            dep[o * r + 1] = dep[o * r];
        }
        vec![
            (b.clone(), a.clone(), 3),
            (b.clone(), both, 3),
            (dep, a.clone(), 2),
        ]
    };
    for (b, a, rank) in cases {
        let (d, dense) = pair_stats(&b, &a, out, inn, r);
        check_stats(&d, &dense);
        assert_eq!(d.numerical_rank, rank);
        let want = dense_sigma(&dense);
        for (x, y) in d.singular_values.iter().zip(&want) {
            assert!((x - y).abs() < 1e-9 * want[0], "{x} vs dense {y}");
        }
    }
    a.iter_mut().for_each(|x| *x *= 1e-3);
    let (d, dense) = pair_stats(&b, &a, out, inn, r);
    check_stats(&d, &dense);
}

#[test]
fn router_full_tensor_norms_match_dense() {
    let s = spec(Pattern::AttentionRouter);
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let sf = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.full_tensors.len(), 2 * Dims::TOY.layers);
    for f in &st.full_tensors {
        let t = sf.tensor(&f.name).unwrap();
        let v = to_f64(t.dtype(), t.data());
        let fro = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((f.fro_norm - fro).abs() < 1e-9 * fro);
        if f.shape.len() == 2 {
            let m = Mat::from_fn(f.shape[0], f.shape[1], |i, j| v[i * f.shape[1] + j]);
            let s1 = dense_sigma(&m)[0];
            assert!((f.spectral_norm.unwrap() - s1).abs() < 1e-9 * s1);
        }
    }
}

#[test]
fn filters_select_layer_target_expert() {
    let s = spec(Pattern::PeftExperts { layers: vec![0, 2] });
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let f = Filter {
        target: Some("down_proj".into()),
        layer: Some(2),
        expert: Some(1),
    };
    let st = stats::compute(&a, &f, &Control::default()).unwrap();
    assert_eq!(st.deltas.len(), 1);
    assert_eq!(key(&st.deltas[0]), (Some(2), "down_proj".into(), Some(1)));
    // Threads do not change results or their order.
    let with_threads = |n| {
        let ctl = Control {
            threads: Some(n),
            ..Default::default()
        };
        stats::compute(&a, &Filter::default(), &ctl).unwrap()
    };
    assert_eq!(with_threads(1), with_threads(2));
}

#[test]
fn cancellation_stops_the_computation() {
    let s = spec(Pattern::Tinker3d);
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let ctl = Control {
        cancel: Some(&cancel),
        ..Default::default()
    };
    assert!(matches!(
        stats::compute(&a, &Filter::default(), &ctl),
        Err(lorascope::Error::Cancelled)
    ));
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let cb = |d: usize, t: usize| {
        assert!(d <= t);
        seen.fetch_max(d, std::sync::atomic::Ordering::Relaxed);
    };
    let ctl = Control {
        progress: Some(&cb),
        ..Default::default()
    };
    let st = stats::compute(&a, &Filter::default(), &ctl).unwrap();
    assert_eq!(seen.into_inner(), st.deltas.len());
}

// ---- compare ----

fn dense_left_basis(m: &Mat<f64>) -> Mat<f64> {
    let svd = m.thin_svd().unwrap();
    let s = svd.S().column_vector();
    let mut idx: Vec<usize> = (0..s.nrows()).collect();
    idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let s1 = s[idx[0]];
    let keep: Vec<usize> = idx.into_iter().filter(|&i| s[i] > 1e-6 * s1).collect();
    Mat::from_fn(m.nrows(), keep.len(), |i, j| svd.U()[(i, keep[j])])
}

fn dense_cos(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    let mut dot = 0.0;
    let (mut nx, mut ny) = (0.0, 0.0);
    for i in 0..x.nrows() {
        for j in 0..x.ncols() {
            dot += x[(i, j)] * y[(i, j)];
            nx += x[(i, j)].powi(2);
            ny += y[(i, j)].powi(2);
        }
    }
    dot / (nx.sqrt() * ny.sqrt())
}

#[test]
fn compare_matches_dense_cosine_and_principal_angles() {
    for pattern in [
        Pattern::Attention,
        Pattern::PeftExperts { layers: vec![1] },
        Pattern::Tinker3d,
    ] {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = spec(pattern.clone());
        let mut sb = spec(pattern);
        sb.seed = 99;
        synth::write_adapter(da.path(), &sa).unwrap();
        synth::write_adapter(db.path(), &sb).unwrap();
        let (a, b) = (
            load(da.path(), LayoutOptions::default()),
            load(db.path(), LayoutOptions::default()),
        );
        let c = compare::compare(&a, &b, &Control::default()).unwrap();
        let (ra, rb) = (
            dense_reference(da.path(), &sa),
            dense_reference(db.path(), &sb),
        );
        assert_eq!(c.pairs.len(), ra.len());
        assert!(c.only_a.is_empty() && c.only_b.is_empty());
        for p in &c.pairs {
            let key = (p.layer, p.target.to_string(), p.expert);
            let (x, y) = (&ra[&key], &rb[&key]);
            let cos = dense_cos(x, y);
            assert!((p.cosine.unwrap() - cos).abs() < 1e-9, "{key:?}");
            let (ux, uy) = (dense_left_basis(x), dense_left_basis(y));
            let m = ux.transpose() * &uy;
            let fro2: f64 = (0..m.nrows())
                .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
                .map(|(i, j)| m[(i, j)].powi(2))
                .sum();
            let sim = fro2 / ux.ncols().min(uy.ncols()) as f64;
            assert!(
                (p.subspace_similarity.unwrap() - sim).abs() < 1e-8,
                "{key:?}: {} vs {sim}",
                p.subspace_similarity.unwrap()
            );
        }
    }
}

#[test]
fn properties_hold_over_random_adapters() {
    for seed in 1..=6u64 {
        let mut s = spec(Pattern::PeftExperts { layers: vec![0, 1] });
        s.seed = seed;
        s.attn_rank = 1 + (seed as usize % 5);
        let (da, dn) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        synth::write_adapter(da.path(), &s).unwrap();
        let mut neg = s.clone();
        neg.alpha = -s.alpha; // same factors, s → −s
        synth::write_adapter(dn.path(), &neg).unwrap();
        let a = load(da.path(), LayoutOptions::default());
        let n = load(dn.path(), LayoutOptions::default());
        let ctl = Control::default();
        let (sa, sn) = (
            stats::compute(&a, &Filter::default(), &ctl).unwrap(),
            stats::compute(&n, &Filter::default(), &ctl).unwrap(),
        );
        for (x, y) in sa.deltas.iter().zip(&sn.deltas) {
            assert!(
                1.0 - 1e-12 <= x.effective_rank
                    && x.effective_rank <= x.numerical_rank as f64 + 1e-12
            );
            assert!(x.stable_rank <= x.rank as f64 + 1e-12);
            assert_eq!(x.scale, -y.scale);
            // Invariant to the sign of s.
            assert_eq!(x.singular_values, y.singular_values);
            assert_eq!(x.effective_rank, y.effective_rank);
        }
        for p in compare::compare(&a, &a, &ctl).unwrap().pairs {
            assert!((p.cosine.unwrap() - 1.0).abs() < 1e-12);
            assert!((p.subspace_similarity.unwrap() - 1.0).abs() < 1e-9);
        }
        for p in compare::compare(&a, &n, &ctl).unwrap().pairs {
            assert!((p.cosine.unwrap() + 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn different_shapes_are_not_comparable_not_a_crash() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sa = spec(Pattern::Attention);
    let mut sb = spec(Pattern::Attention);
    sb.dims.hidden = 14; // another base model
    synth::write_adapter(da.path(), &sa).unwrap();
    synth::write_adapter(db.path(), &sb).unwrap();
    let (a, b) = (
        load(da.path(), LayoutOptions::default()),
        load(db.path(), LayoutOptions::default()),
    );
    let c = compare::compare(&a, &b, &Control::default()).unwrap();
    assert!(!c.pairs.is_empty());
    assert!(c
        .pairs
        .iter()
        .all(|p| !p.comparable && p.cosine.is_none() && p.note.is_some()));
}

#[test]
fn real_gpt_oss_shapes_recover_planted_spectra() {
    let mut d = Dims::GPT_OSS_20B;
    d.layers = 2; // two layers keep the fixture small; shapes are the real ones
    let mut s = Spec::new(d, Pattern::PeftExperts { layers: vec![1] });
    s.attn_rank = 8;
    s.expert_rank = 4;
    let dir = tempfile::tempdir().unwrap();
    let g = synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    assert_eq!(a.experts(), Some(32));
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    assert_eq!(st.deltas.len(), 2 * 4 + 2 * 32);
    for p in &g.planted {
        let d = st
            .deltas
            .iter()
            .find(|d| key(d) == (Some(p.layer), p.target.clone(), p.expert))
            .unwrap();
        for (x, y) in d.singular_values.iter().zip(&p.sigma) {
            // F32 storage: relative rounding of ~1e-7 per element.
            assert!((x - y * d.scale.abs()).abs() < 1e-5 * p.sigma[0] * d.scale.abs());
        }
    }
    // One dense SVD at a real shape (k_proj, 512×2880).
    let dense = dense_reference_of(dir.path(), &s, |n| n.contains("layers.0.self_attn.k_proj"));
    let k = st.deltas.iter().find(|d| d.target == "k_proj").unwrap();
    check_stats(k, &dense[&key(k)]);
}

/// `--split-gate-up`: the gate and up rows of every fused gate_up delta, as their own deltas,
/// against the dense rows of ΔW (interleaved for gpt-oss, halves for other bases).
#[test]
fn split_gate_up_matches_the_dense_rows_of_each_half() {
    for (base, interleaved) in [("openai/gpt-oss-20b", true), ("Qwen/Qwen3-30B-A3B", false)] {
        let s = spec(Pattern::PeftExperts { layers: vec![1] });
        let dir = tempfile::tempdir().unwrap();
        let g = synth::write_adapter(dir.path(), &s).unwrap();
        let mut cfg = g.config.clone();
        cfg["base_model_name_or_path"] = base.into();
        std::fs::write(
            dir.path().join("adapter_config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        let opts = LayoutOptions {
            split_gate_up: true,
            ..Default::default()
        };
        let a = load(dir.path(), opts);
        assert!(
            a.deltas.iter().all(|d| d.target != "gate_up_proj"),
            "{base}"
        );
        // The explorer's toggle splits the deltas already loaded: the same deltas, same order.
        let fused = load(dir.path(), LayoutOptions::default());
        assert!(fused.has_fused_gate_up() && !a.has_fused_gate_up());
        assert_eq!(fused.with_split_gate_up().deltas, a.deltas, "{base}");
        let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
        let dense = dense_reference(dir.path(), &s);
        let mut halves = 0;
        for d in &st.deltas {
            let (layer, target, expert) = key(d);
            let half = match target.as_str() {
                "gate_proj" => 0,
                "up_proj" => 1,
                _ => {
                    check_stats(d, &dense[&key(d)]);
                    continue;
                }
            };
            let full = &dense[&(layer, "gate_up_proj".to_string(), expert)];
            let n = full.nrows() / 2;
            let row = |i: usize| {
                if interleaved {
                    2 * i + half
                } else {
                    half * n + i
                }
            };
            let m = Mat::from_fn(n, full.ncols(), |i, j| full[(row(i), j)]);
            check_stats(d, &m);
            halves += 1;
        }
        assert_eq!(halves, 2 * Dims::TOY.experts, "{base}");
    }
}

/// Statistics carry their delta's index: filtered statistics land on their own deltas, and
/// statistics of the fused layout never land on a delta of the split one.
#[test]
fn statistics_find_their_deltas_by_index_within_their_layout() {
    let s = spec(Pattern::PeftExperts { layers: vec![1] });
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &s).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let only_layer_1 = Filter {
        layer: Some(1),
        ..Default::default()
    };
    let st = stats::compute(&a, &only_layer_1, &Control::default()).unwrap();
    assert!(!st.deltas.is_empty() && st.deltas.len() < a.deltas.len());
    let per = st.per_delta(&a);
    for (i, (d, s)) in a.deltas.iter().zip(&per).enumerate() {
        assert_eq!(s.is_some(), d.layer == Some(1), "delta {i}");
        if let Some(s) = s {
            assert_eq!((s.index, s.key()), (i, d.key()));
        }
    }
    let split = a.with_split_gate_up();
    let landed: Vec<_> = st.per_delta(&split).into_iter().flatten().collect();
    assert!(landed.iter().all(|s| s.target != "gate_up_proj"));
    assert!(
        landed.len() < st.deltas.len(),
        "fused statistics on split deltas"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the base model: every statistic of `base::stats` from a dense f64 reference, with the
// base read by the safetensors crate and MXFP4 decoded here by the transformers recipe.

use lorascope::base::stats::{self as base_stats, BaseDeltaStats, Session};
use lorascope::base::{self, Base};
use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};

/// Sizes with MXFP4-sized hidden and intermediate dims (multiples of 32), gate_up not square.
const BASE_DIMS: Dims = Dims {
    layers: 2,
    hidden: 64,
    q_out: 64,
    kv_out: 32,
    experts: 3,
    inter: 96,
};

/// transformers' `FP4_VALUES` (integrations/mxfp4.py).
const FP4_VALUES: [f64; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Every tensor of a base snapshot, read with the safetensors crate.
fn base_tensors(snap: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(snap).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            for (n, t) in st.tensors() {
                out.insert(n, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
            }
        }
    }
    out
}

/// W (out × in) of a delta key, straight from the tensors: `convert_moe_packed_tensors`'s decode
/// (low nibble first, ldexp by scale − 127) for MXFP4, P[e]ᵀ for stacked (E, in, out), and the
/// even (gate) or odd (up) rows of the fused gate_up.
fn base_weight(t: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>, key: &Key) -> Mat<f64> {
    let (layer, target, expert) = key;
    let l = layer.unwrap();
    let p = format!("model.layers.{l}");
    let fused = match target.as_str() {
        "gate_proj" | "up_proj" => "gate_up_proj",
        x => x,
    };
    let full = if let Some(e) = expert {
        if let Some((_, shape, blocks)) = t.get(&format!("{p}.mlp.experts.{fused}_blocks")) {
            let (_, _, scales) = &t[&format!("{p}.mlp.experts.{fused}_scales")];
            let (rows, g) = (shape[1], shape[2]);
            Mat::from_fn(rows, g * 32, |o, i| {
                let (blk, j) = (i / 32, i % 32);
                let byte = blocks[((e * rows + o) * g + blk) * 16 + j / 2];
                let nib = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                let s = scales[(e * rows + o) * g + blk] as i32 - 127;
                FP4_VALUES[nib as usize] * 2f64.powi(s)
            })
        } else {
            let (dt, shape, data) = &t[&format!("{p}.mlp.experts.{fused}")];
            let v = to_f64(*dt, data);
            let (inn, out) = (shape[1], shape[2]);
            Mat::from_fn(out, inn, |o, i| v[e * inn * out + i * out + o])
        }
    } else {
        let name = match target.as_str() {
            "router" => format!("{p}.mlp.router.weight"),
            x => format!("{p}.self_attn.{x}.weight"),
        };
        let (dt, shape, data) = &t[&name];
        let v = to_f64(*dt, data);
        Mat::from_fn(shape[0], shape[1], |o, i| v[o * shape[1] + i])
    };
    match target.as_str() {
        "gate_proj" | "up_proj" => {
            let h = usize::from(target == "up_proj");
            Mat::from_fn(full.nrows() / 2, full.ncols(), |o, i| full[(2 * o + h, i)])
        }
        _ => full,
    }
}

fn fro_of(m: &Mat<f64>) -> f64 {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .map(|(i, j)| m[(i, j)].powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The definitions of the five statistics on dense matrices (ΔW already in W's orientation).
fn check_base_stats(got: &BaseDeltaStats, dw: &Mat<f64>, w: &Mat<f64>, key: &Key) {
    let close = |x: Option<f64>, y: f64, what: &str| {
        let x = x.unwrap_or_else(|| panic!("{what} is null at {key:?} ({:?})", got.note));
        assert!(
            (x - y).abs() <= 1e-6 * y.abs().max(1e-300),
            "{what}: {x} vs dense {y} at {key:?}"
        );
    };
    let (fw, fd) = (fro_of(w), fro_of(dw));
    close(got.base_fro_norm, fw, "base_fro_norm");
    close(got.relative_change, fd / fw, "relative_change");
    let sd = dw.thin_svd().unwrap();
    let sw = w.thin_svd().unwrap();
    let order = |s: faer::ColRef<'_, f64>| {
        let mut idx: Vec<usize> = (0..s.nrows()).collect();
        idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        idx
    };
    let (id, iw) = (order(sd.S().column_vector()), order(sw.S().column_vector()));
    let (s_d, s_w) = (sd.S().column_vector(), sw.S().column_vector());
    close(
        got.relative_spectral,
        s_d[id[0]] / s_w[iw[0]],
        "relative_spectral",
    );
    let r = id.iter().filter(|&&i| s_d[i] > 1e-6 * s_d[id[0]]).count();
    let ur = Mat::from_fn(dw.nrows(), r, |i, j| sd.U()[(i, id[j])]);
    let vr = Mat::from_fn(dw.ncols(), r, |i, j| sd.V()[(i, id[j])]);
    let proj = ur.transpose() * w * &vr;
    close(got.amplification, fd / fro_of(&proj), "amplification");
    let uw = Mat::from_fn(w.nrows(), r, |i, j| sw.U()[(i, iw[j])]);
    let x = uw.transpose() * &ur;
    close(got.alignment, fro_of(&x).powi(2) / r as f64, "alignment");
}

/// Writes `spec` and a base with `storage`, computes the base statistics and checks every delta
/// against the dense reference. Returns how many deltas were checked.
fn check_against_base(spec: &Spec, storage: ExpertStorage, transposed: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let ad = dir.path().join("adapter");
    synth::write_adapter(&ad, spec).unwrap();
    let a = load(&ad, LayoutOptions::default());
    let hub = dir.path().join("hub");
    write_base(
        &hub,
        "openai/gpt-oss-20b",
        &BaseSpec::new(BASE_DIMS, storage),
    )
    .unwrap();
    let (id, snap) = base::locate(&a, Some("openai/gpt-oss-20b"), &[hub]).unwrap();
    let session = Session::new(Base::open(&id, &snap).unwrap());
    let filter = Filter::default();
    let st = stats::compute(&a, &filter, &Control::default()).unwrap();
    let rep = base_stats::compute(&session, &a, &filter, &Control::default()).unwrap();
    assert_eq!(rep.deltas.len(), st.deltas.len());
    let dense = dense_reference(&ad, spec);
    let tensors = base_tensors(&snap);
    let mut checked = 0;
    for (d, b) in st.deltas.iter().zip(&rep.deltas) {
        let key = key(d);
        if b.base_fro_norm.is_none() {
            // Only a shape that fits W neither way may lack numbers, and it says why.
            assert!(transposed, "no base statistics at {key:?}: {:?}", b.note);
            continue;
        }
        let dw = &dense[&key];
        let dw = if transposed {
            dw.transpose().to_owned()
        } else {
            dw.clone()
        };
        check_base_stats(b, &dw, &base_weight(&tensors, &key), &key);
        checked += 1;
    }
    checked
}

fn base_spec(pattern: Pattern) -> Spec {
    let mut s = Spec::new(BASE_DIMS, pattern);
    s.attn_rank = 4;
    s.expert_rank = 3;
    s.dtype = Dtype::BF16;
    s
}

#[test]
fn attention_deltas_match_dense_against_the_base() {
    for storage in [ExpertStorage::Mxfp4, ExpertStorage::Bf16] {
        let n = check_against_base(&base_spec(Pattern::Attention), storage, false);
        assert_eq!(n, 4 * BASE_DIMS.layers);
    }
}

#[test]
fn peft_packed_experts_match_dense_against_mxfp4_and_bf16_bases() {
    let e = BASE_DIMS.experts;
    for storage in [ExpertStorage::Mxfp4, ExpertStorage::Bf16] {
        let spec = base_spec(Pattern::PeftExperts { layers: vec![0, 1] });
        let n = check_against_base(&spec, storage, false);
        assert_eq!(n, 2 * (4 + 2 * e), "{storage:?}");
    }
}

#[test]
fn unsloth_module_list_matches_dense_against_the_base() {
    for storage in [ExpertStorage::Mxfp4, ExpertStorage::Bf16] {
        let spec = base_spec(Pattern::UnslothExperts { layers: vec![1] });
        let n = check_against_base(&spec, storage, false);
        assert_eq!(n, 4 * BASE_DIMS.layers + 2 * BASE_DIMS.experts);
    }
}

#[test]
fn tinker_3d_gate_and_up_match_the_rows_of_the_fused_base() {
    for storage in [ExpertStorage::Mxfp4, ExpertStorage::Bf16] {
        let spec = base_spec(Pattern::Tinker3d);
        let n = check_against_base(&spec, storage, false);
        assert_eq!(n, BASE_DIMS.layers * (4 + 3 * BASE_DIMS.experts));
    }
}

/// PEFT's swapped in/out features (peft 0.19.0 on transformers 5, or transformers 4): gate_up's
/// A is (r·E, 2I) and B (H, r·E), so ΔW is W's transpose and is set against W as ΔWᵀ.
#[test]
fn swapped_in_out_gate_up_is_set_against_w_as_its_transpose() {
    // An adapter whose gate_up output is H and input 2I of the base (hidden and 2·inter swapped).
    let dims = Dims {
        hidden: 2 * BASE_DIMS.inter,
        inter: BASE_DIMS.hidden / 2,
        ..BASE_DIMS
    };
    let mut spec = base_spec(Pattern::PeftExperts { layers: vec![0] });
    spec.dims = dims;
    spec.targets = vec![];
    let n = check_against_base(&spec, ExpertStorage::Mxfp4, true);
    assert_eq!(n, BASE_DIMS.experts, "every gate_up expert, transposed");
}

/// Intruder dimensions against the dense definition (the authors' `find_intruder_dimensions.py`:
/// |cos| of the top-k left singular vectors of W + ΔW with all of W's, below ε), on an adapter
/// strong enough that its own directions lead W + ΔW: its r directions are intruders, W's are not.
#[test]
fn intruder_dimensions_match_the_dense_definition() {
    use lorascope::base::stats::IntruderOpts;
    let dir = tempfile::tempdir().unwrap();
    let ad = dir.path().join("adapter");
    let mut spec = base_spec(Pattern::PeftExperts { layers: vec![0] });
    spec.targets = vec!["q_proj"];
    spec.alpha = 600.0;
    synth::write_adapter(&ad, &spec).unwrap();
    let a = load(&ad, LayoutOptions::default());
    let hub = dir.path().join("hub");
    write_base(
        &hub,
        "openai/gpt-oss-20b",
        &BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4),
    )
    .unwrap();
    let (id, snap) = base::locate(&a, None, &[hub]).unwrap();
    let session = Session::new(Base::open(&id, &snap).unwrap());
    let filter = Filter {
        layer: Some(0),
        ..Filter::default()
    };
    let st = stats::compute(&a, &filter, &Control::default()).unwrap();
    let dense = dense_reference(&ad, &spec);
    let tensors = base_tensors(&snap);
    let mut counts = vec![];
    for eps in [0.5, 0.9] {
        let opts = IntruderOpts {
            k: 10,
            epsilon: eps,
        };
        let rep = base_stats::compute_deep(&session, &a, &filter, &Control::default(), Some(opts))
            .unwrap();
        for (d, b) in st.deltas.iter().zip(&rep.deltas) {
            let key = key(d);
            let w = base_weight(&tensors, &key);
            let tuned = &w + &dense[&key];
            let (sw, st_) = (w.thin_svd().unwrap(), tuned.thin_svd().unwrap());
            let s = st_.S().column_vector();
            let mut idx: Vec<usize> = (0..s.nrows()).collect();
            idx.sort_by(|&x, &y| s[y].total_cmp(&s[x]));
            let want: Vec<f64> = idx[..10]
                .iter()
                .filter(|&&j| {
                    let best = (0..sw.U().ncols())
                        .map(|i| {
                            (0..w.nrows())
                                .map(|r| st_.U()[(r, j)] * sw.U()[(r, i)])
                                .sum::<f64>()
                                .abs()
                        })
                        .fold(0.0, f64::max);
                    best < eps
                })
                .map(|&j| s[j])
                .collect();
            let got = b.intruders.as_ref().expect("intruders with deep");
            assert_eq!(got.count, want.len(), "ε {eps} at {key:?}");
            for (x, y) in got.sigma.iter().zip(&want) {
                assert!((x - y).abs() <= 1e-8 * y, "σ {x} vs {y} at {key:?}");
            }
            counts.push(got.count);
        }
    }
    // Neither all nor none: the test can tell intruders from W's own directions.
    assert!(
        counts.iter().any(|&c| c > 0) && counts.iter().any(|&c| c < 10),
        "{counts:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Merged full weights against their base: W_merged − W_base per weight, against dense f64
// references read with the safetensors crate (MXFP4 decoded as transformers does).

use lorascope::base::merged::{self, MergedDelta};
use lorascope::synth::base::{write_merged, Merge};

/// Every σ of a dense matrix, descending.
fn all_sigma(m: &Mat<f64>) -> Vec<f64> {
    let mut s: Vec<f64> = m
        .thin_svd()
        .unwrap()
        .S()
        .column_vector()
        .iter()
        .copied()
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// Writes `merged` and `base` repos, computes the merged report and checks every weight
/// against W_merged − W_base formed densely from the two snapshots' tensors. Returns the report.
fn check_merged(
    dims: Dims,
    base_storage: ExpertStorage,
    write: impl Fn(&Path),
) -> Vec<MergedDelta> {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    write_base(&hub, "org/base", &BaseSpec::new(dims, base_storage)).unwrap();
    write(&hub);
    let open = |id: &str| {
        let repo = hub.join(format!("models--{}", id.replace('/', "--")));
        let (_, snap) = lorascope::adapter::discovery::snapshot_of(&repo).unwrap();
        (Base::open(id, &snap).unwrap(), snap)
    };
    let ((b, bsnap), (m, msnap)) = (open("org/base"), open("me/merged"));
    let r = merged::compute(&m, &b, &Filter::default(), &Control::default()).unwrap();
    let (bt, mt) = (base_tensors(&bsnap), base_tensors(&msnap));
    let per_layer = 4 + 1 + 2 * dims.experts;
    assert_eq!(r.compared, dims.layers * per_layer, "{:?}", r.notes);
    assert_eq!(r.weights.len(), r.compared);
    for w in &r.weights {
        let key: Key = (Some(w.layer), w.target.to_string(), w.expert);
        let (wm, wb) = (base_weight(&mt, &key), base_weight(&bt, &key));
        let d = &wm - &wb;
        assert_eq!(w.shape, [d.nrows(), d.ncols()], "{key:?}");
        let (fd, fb) = (fro_of(&d), fro_of(&wb));
        let close = |x: f64, y: f64, tol: f64, what: &str| {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1e-300),
                "{what}: {x} vs dense {y} at {key:?}"
            )
        };
        close(w.fro_norm, fd, 1e-12, "fro_norm");
        close(w.base_fro_norm, fb, 1e-12, "base_fro_norm");
        close(
            w.relative_change.unwrap(),
            fd / fb,
            1e-12,
            "relative_change",
        );
        if fd == 0.0 {
            assert!(w.singular_values.is_empty() && w.spectral_norm == 0.0);
            continue;
        }
        let s = all_sigma(&d);
        let k = s.len().min(merged::TOP);
        assert_eq!(w.singular_values.len(), k, "{key:?}");
        close(w.spectral_norm, s[0], 1e-9, "spectral_norm");
        close(w.stable_rank, fd * fd / (s[0] * s[0]), 1e-8, "stable_rank");
        if w.approximate {
            // Ritz values never exceed the true σ_i, and the leading ones have converged.
            for (i, (x, y)) in w.singular_values.iter().zip(&s).enumerate() {
                assert!(*x <= y * (1.0 + 1e-9), "σ{i} {x} above {y} at {key:?}");
            }
        } else {
            for (i, (x, y)) in w.singular_values.iter().zip(&s).enumerate() {
                close(*x, *y, 1e-9 * s[0] / y.max(1e-300), &format!("σ{i}"));
            }
            let erank = lorascope::compute::stats::effective_rank(&s);
            close(w.effective_rank, erank, 1e-9, "effective_rank");
        }
    }
    r.weights
}

/// A `merged_16bit` upload (BF16 stacked experts) over an MXFP4 base: only the merged layer's
/// attention and expert 1 changed (unchanged MXFP4 weights are exact in BF16: zero
/// differences); q and o are 544×544, above the dense-SVD size, so their spectrum is the
/// randomized top 64, marked approximate, with the merge's rank-3 directions found exactly.
#[test]
fn merged_bf16_over_mxfp4_base_matches_dense_differences() {
    let dims = Dims {
        layers: 2,
        hidden: 544,
        q_out: 544,
        kv_out: 32,
        experts: 2,
        inter: 32,
    };
    let merge = Merge {
        layers: vec![1],
        experts: vec![1],
        rank: 3,
        relative: 0.05,
        seed: 11,
        storage: ExpertStorage::Bf16,
        base_model: "org/base".into(),
    };
    let base = BaseSpec::new(dims, ExpertStorage::Mxfp4);
    let ws = check_merged(dims, ExpertStorage::Mxfp4, |hub| {
        write_merged(hub, "me/merged", &base, &merge).unwrap();
    });
    let changed: Vec<(usize, String, Option<usize>)> = ws
        .iter()
        .filter(|w| w.fro_norm > 0.0)
        .map(|w| (w.layer, w.target.to_string(), w.expert))
        .collect();
    let want: Vec<(usize, String, Option<usize>)> = ["q_proj", "k_proj", "v_proj", "o_proj"]
        .iter()
        .map(|t| (1, t.to_string(), None))
        .chain(
            ["gate_up_proj", "down_proj"]
                .iter()
                .map(|t| (1, t.to_string(), Some(1))),
        )
        .collect();
    assert_eq!(changed, want);
    let q = ws
        .iter()
        .find(|w| w.layer == 1 && w.target.as_str() == "q_proj")
        .unwrap();
    assert!(q.approximate && q.singular_values.len() == merged::TOP);
    assert_eq!((q.merged_storage, q.base_storage), ("dense", "dense"));
    let g = ws
        .iter()
        .find(|w| w.layer == 1 && w.target.as_str() == "gate_up_proj" && w.expert == Some(1))
        .unwrap();
    assert_eq!((g.merged_storage, g.base_storage), ("stacked", "mxfp4"));
    assert!(!g.approximate);
}

/// The other way round: MXFP4 experts on the merged side, BF16 stacked (E, in, out) on the
/// base's, every weight different (another seed): exact spectra on both expert orientations.
#[test]
fn merged_mxfp4_over_bf16_base_matches_dense_differences() {
    let dims = Dims {
        layers: 1,
        hidden: 64,
        q_out: 64,
        kv_out: 32,
        experts: 3,
        inter: 96,
    };
    let ws = check_merged(dims, ExpertStorage::Bf16, |hub| {
        let mut other = BaseSpec::new(dims, ExpertStorage::Mxfp4);
        other.seed = 99;
        write_base(hub, "me/merged", &other).unwrap();
    });
    assert!(ws.iter().all(|w| w.fro_norm > 0.0 && !w.approximate));
    let e = ws.iter().find(|w| w.expert == Some(2)).unwrap();
    assert_eq!((e.merged_storage, e.base_storage), ("mxfp4", "stacked"));
}

/// DoRA against the base: an attention adapter with PEFT's `lora_magnitude_vector` (one value per
/// output row) gets the exact update ΔW = diag(m / ‖W + sBA‖_row)(W + sBA) − W, checked against
/// its dense definition (PEFT `tuners/lora/dora.py` `get_weight_norm`: the norm along `dim=1` of
/// the (out, in) weight). One module has B = 0, as PEFT initialises it: only its magnitude moves W.
#[test]
fn dora_updates_match_their_dense_definition() {
    let dir = tempfile::tempdir().unwrap();
    let ad = dir.path().join("adapter");
    let mut spec = base_spec(Pattern::Attention);
    spec.dtype = Dtype::F32;
    let mut g = synth::generate(&spec);
    let hub = dir.path().join("hub");
    write_base(
        &hub,
        "openai/gpt-oss-20b",
        &BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4),
    )
    .unwrap();
    let (_, snap) = base::locate(
        &load_from(&ad, &spec, &g),
        Some("openai/gpt-oss-20b"),
        std::slice::from_ref(&hub),
    )
    .unwrap();
    let tensors = base_tensors(&snap);
    // B of layer 0's v_proj zeroed; every magnitude = the row norms of W + sBA, scaled per row.
    let zero_b = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight";
    for t in g.tensors.iter_mut().filter(|t| t.name == zero_b) {
        t.bytes = Some(synth::encode(
            &vec![0.0; t.shape.iter().product()],
            Dtype::F32,
        ));
    }
    let mut rng = synth::Rng::new(5);
    let mut mags = BTreeMap::new();
    for l in 0..BASE_DIMS.layers {
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            let out = BASE_DIMS.attn_shape(p).0;
            // Values exact in F32, the dtype they are stored in.
            let m: Vec<f64> = (0..out)
                .map(|_| (0.5 + rng.uniform()) as f32 as f64)
                .collect();
            g.tensors.push(synth::TensorData {
                name: format!(
                    "base_model.model.model.layers.{l}.self_attn.{p}.lora_magnitude_vector"
                ),
                dtype: Dtype::F32,
                shape: vec![out],
                bytes: Some(synth::encode(&m, Dtype::F32)),
            });
            mags.insert((Some(l), p.to_string(), None), m);
        }
    }
    let a = load_from(&ad, &spec, &g);
    let session = Session::new(Base::open("openai/gpt-oss-20b", &snap).unwrap());
    let filter = Filter::default();
    let st = stats::compute(&a, &filter, &Control::default()).unwrap();
    let rep = base_stats::compute(&session, &a, &filter, &Control::default()).unwrap();
    let lora = dense_reference(&ad, &spec);
    for (d, b) in st.deltas.iter().zip(&rep.deltas) {
        let key = key(d);
        let w = base_weight(&tensors, &key);
        let v = &w + &lora[&key];
        let m = &mags[&key];
        let want = Mat::from_fn(w.nrows(), w.ncols(), |i, j| {
            let n = (0..v.ncols())
                .map(|k| v[(i, k)].powi(2))
                .sum::<f64>()
                .sqrt();
            m[i] / n * v[(i, j)] - w[(i, j)]
        });
        let got = b
            .dora
            .as_ref()
            .unwrap_or_else(|| panic!("no DoRA update at {key:?}"));
        let (fd, s1) = (fro_of(&want), all_sigma(&want)[0]);
        let close = |x: f64, y: f64, what: &str| {
            assert!(
                (x - y).abs() <= 1e-9 * y,
                "{what}: {x} vs dense {y} at {key:?}"
            )
        };
        close(got.fro_norm, fd, "fro_norm");
        close(got.spectral_norm, s1, "spectral_norm");
        close(
            got.relative_change.unwrap(),
            fd / fro_of(&w),
            "relative_change",
        );
        close(
            got.relative_spectral.unwrap(),
            s1 / all_sigma(&w)[0],
            "relative_spectral",
        );
    }
    assert!(rep.deltas.iter().all(|b| b.dora.is_some()));
}

/// Writes the generated tensors and config into `dir` (with `use_dora` set when a magnitude is
/// there) and loads the adapter.
fn load_from(dir: &Path, spec: &Spec, g: &synth::Generated) -> Adapter {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(spec.pattern.file_name()),
        synth::safetensors_bytes(&g.tensors, true),
    )
    .unwrap();
    let mut config = g.config.clone();
    config["use_dora"] = g
        .tensors
        .iter()
        .any(|t| t.name.contains("lora_magnitude_vector"))
        .into();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    load(dir, LayoutOptions::default())
}

/// The streaming base writer (one layer in memory at a time, for the full-size benchmark base)
/// writes the same tensors, index and config as the in-memory one, and `Base` opens it whole.
#[test]
fn the_streamed_base_holds_the_in_memory_bases_tensors() {
    use lorascope::synth::base::write_base_dir;
    let dir = tempfile::tempdir().unwrap();
    let mut b = BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4);
    b.shards = 3;
    b.dims.layers = 4;
    write_base(&dir.path().join("hub"), "openai/gpt-oss-20b", &b).unwrap();
    let repo = dir.path().join("hub/models--openai--gpt-oss-20b");
    let (_, mem) = lorascope::adapter::discovery::snapshot_of(&repo).unwrap();
    let streamed = dir.path().join("streamed");
    let bytes = write_base_dir(&streamed, &b).unwrap();
    let on_disk: u64 = std::fs::read_dir(&streamed)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes > 0 && bytes <= on_disk, "{bytes} of {on_disk}");
    let (want, got) = (base_tensors(&mem), base_tensors(&streamed));
    assert_eq!(want.len(), got.len());
    assert!(want == got, "the streamed tensors differ");
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    for f in ["model.safetensors.index.json", "config.json"] {
        assert_eq!(json(&mem.join(f)), json(&streamed.join(f)), "{f}");
    }
    let (m, s) = (
        Base::open("mem", &mem).unwrap(),
        Base::open("streamed", &streamed).unwrap(),
    );
    assert_eq!(m.tensor_count(), s.tensor_count());
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

/// `compute_streamed`: the relative change of every delta first (the rest pending, not null),
/// then one report per layer with that layer's deltas complete and equal to `compute`'s, and a
/// result equal to `compute`'s, notes included.
#[test]
fn streamed_base_statistics_arrive_a_layer_at_a_time_amplification_first_and_end_as_compute() {
    use lorascope::base::stats::Fields;
    let dir = tempfile::tempdir().unwrap();
    let ad = dir.path().join("adapter");
    let layers = vec![0, 1];
    synth::write_adapter(
        &ad,
        &base_spec(Pattern::PeftExperts {
            layers: layers.clone(),
        }),
    )
    .unwrap();
    let a = load(&ad, LayoutOptions::default());
    let hub = dir.path().join("hub");
    let b = BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4);
    write_base(&hub, "openai/gpt-oss-20b", &b).unwrap();
    let (id, snap) = base::locate(&a, None, &[hub]).unwrap();
    let (f, c) = (Filter::default(), Control::default());
    let full = {
        let s = Session::new(Base::open(&id, &snap).unwrap());
        base_stats::compute(&s, &a, &f, &c).unwrap()
    };
    let s = Session::new(Base::open(&id, &snap).unwrap());
    let mut parts = vec![];
    let got =
        base_stats::compute_streamed(&s, &a, &f, &c, Fields::All, &mut |r| parts.push(r)).unwrap();
    assert_eq!(got, full);
    let l = layers.len();
    assert_eq!(
        parts.len(),
        2 * l,
        "relative first, then each layer's amplification, then each layer's alignment but the last"
    );
    for (k, p) in parts.iter().enumerate() {
        assert_eq!(p.notes, full.notes, "report {k}");
        // Report k holds the first k layers' amplification (k ≤ l), then all of them and the
        // first k − l layers' remaining fields.
        let (amplified, complete) = (k.min(l), k.saturating_sub(l));
        for ((d, g), w) in a.deltas.iter().zip(&p.deltas).zip(&full.deltas) {
            assert_eq!(g.relative_change, w.relative_change);
            assert_eq!(g.base_fro_norm, w.base_fro_norm);
            assert!(w.amplification.is_some() && !w.pending(Fields::All));
            let before = |n: usize| d.layer.is_some_and(|x| x < n);
            if before(complete) {
                assert_eq!(g, w);
            } else if before(amplified) {
                assert!(g.pending(Fields::All) && !g.pending(Fields::Amplification));
                assert_eq!(g.amplification, w.amplification);
                assert_eq!(g.alignment, None);
            } else {
                assert!(g.pending(Fields::Amplification) && !g.pending(Fields::Relative));
                assert_eq!((g.amplification, g.alignment), (None, None));
            }
        }
    }
}

/// `compute_with` at each level: the fields it asks for equal the full computation's (already
/// checked against the dense reference above), the costlier ones stay null; with `deep`, the
/// intruders equal `compute_deep`'s at every level.
#[test]
fn fewer_fields_compute_the_same_numbers_and_leave_the_rest_null() {
    use lorascope::base::stats::{Fields, IntruderOpts, Opts};
    let dir = tempfile::tempdir().unwrap();
    let ad = dir.path().join("adapter");
    synth::write_adapter(&ad, &base_spec(Pattern::PeftExperts { layers: vec![0, 1] })).unwrap();
    let a = load(&ad, LayoutOptions::default());
    let hub = dir.path().join("hub");
    let b = BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4);
    write_base(&hub, "openai/gpt-oss-20b", &b).unwrap();
    let (id, snap) = base::locate(&a, None, &[hub]).unwrap();
    let (f, c) = (Filter::default(), Control::default());
    let deep = Some(IntruderOpts::default());
    let full = {
        let s = Session::new(Base::open(&id, &snap).unwrap());
        base_stats::compute_deep(&s, &a, &f, &c, deep).unwrap()
    };
    assert!(full.deltas.iter().all(|d| d.alignment.is_some()));
    for fields in [Fields::Relative, Fields::Amplification] {
        let s = Session::new(Base::open(&id, &snap).unwrap());
        let got = base_stats::compute_with(&s, &a, &f, &c, Opts { fields, deep }).unwrap();
        assert_eq!(got.deltas.len(), full.deltas.len());
        for (g, w) in got.deltas.iter().zip(&full.deltas) {
            assert_eq!(g.base_fro_norm, w.base_fro_norm);
            assert_eq!(g.relative_change, w.relative_change);
            assert_eq!(g.intruders, w.intruders);
            if fields == Fields::Amplification {
                // W·V by panels here, from the dense W there: the same sums, other roundings.
                let (x, y) = (g.amplification.unwrap(), w.amplification.unwrap());
                assert!((x - y).abs() <= 1e-12 * y, "{x} vs {y}");
            } else {
                assert_eq!(g.amplification, None);
            }
            assert_eq!((g.relative_spectral, g.alignment), (None, None));
        }
    }
}
