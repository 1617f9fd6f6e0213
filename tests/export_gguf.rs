//! `export --format gguf`: every layout family written as a GGUF LoRA file whose deltas, read the
//! way llama.cpp applies them, equal the source's; truncations whose errors are the predicted
//! tail; every dtype within its derived rounding bound; the loader rules of llama.cpp stated one
//! by one with their source; what llama.cpp cannot apply refused or dropped; the safety rules.
//!
//! The written file is parsed here by a reader of its own (`Gguf`, the GGUF v3 layout of
//! ggml's `gguf.cpp`), not by lorascope's, and each pair is applied as llama.cpp's graph applies
//! it (`src/llama-graph.cpp` `build_lora_mm`: ΔW = scale·B·A with scale = alpha / `lora_b->ne[0]`,
//! `src/llama-adapter.h` `get_scale`).

mod support;

use faer::Mat;
use lorascope::adapter::discovery;
use lorascope::adapter::gguf::GgmlType;
use lorascope::adapter::layout::{LayoutOptions, Target};
use lorascope::adapter::Adapter;
use lorascope::compute::stats::Control;
use lorascope::export::{self, Engine, ExportError, Format, Options, RankRule, Report};
use lorascope::synth::{self, Dims, Pattern, Spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::read_factor;

type Key = (Option<usize>, String, Option<usize>);

/// The one adapter at `path` (a folder or a file), as lorascope reads it.
fn open(path: &Path) -> Adapter {
    let src = discovery::discover_path(path);
    assert_eq!(src.len(), 1, "{}", path.display());
    let a = Adapter::load(&src[0], LayoutOptions::default());
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

fn gguf_options(q8_0: bool) -> Options {
    Options {
        format: Format::Gguf { q8_0 },
        engine: Engine::Llamacpp,
        rank: RankRule::Keep,
        max_rank: None,
        dtype: None,
        drop_unservable: false,
        force: false,
        protected: vec![],
    }
}

fn export_to(a: &Adapter, out: &Path, opts: &Options) -> Result<Report, lorascope::Error> {
    export::export(a, out, opts, &Control::default())
}

/// s·B·A of every source delta through lorascope's reader (tests/math.rs checks it against dense
/// references); a fused gpt-oss gate_up becomes its gate (even rows) and up (odd rows), the
/// tensors of llama.cpp's gpt-oss (convert_hf_to_gguf.py `GptOssModel`: `[:, ::2, :]`,
/// `[:, 1::2, :]`).
fn dense_source(a: &Adapter) -> BTreeMap<Key, Mat<f64>> {
    let mut out = BTreeMap::new();
    for d in &a.deltas {
        let (br, bc, b) = read_factor(a, d.b);
        let (_, ac, av) = read_factor(a, d.a);
        let m = Mat::from_fn(br, ac, |o, i| {
            d.scale * (0..bc).map(|j| b[o * bc + j] * av[j * ac + i]).sum::<f64>()
        });
        if d.target == Target::GateUp {
            for (half, t) in [(0, "gate_proj"), (1, "up_proj")] {
                let h = Mat::from_fn(br / 2, ac, |o, i| m[(2 * o + half, i)]);
                out.insert((d.layer, t.to_string(), d.expert), h);
            }
        } else {
            out.insert((d.layer, d.target.to_string(), d.expert), m);
        }
    }
    out
}

/// A GGUF key/value this test reads.
#[derive(Debug, Clone, PartialEq)]
enum Kv {
    U32(u32),
    F32(f32),
    Str(String),
    Other(u32),
}

/// A GGUF file as ggml's `gguf.cpp` lays it out (v3, little-endian): magic, version, tensor
/// and key/value counts, the key/values, the tensor infos (name, dims, `ne` fastest first,
/// type, offset), then the data from the first 32-byte boundary.
struct Gguf {
    version: u32,
    kv: BTreeMap<String, Kv>,
    /// name → (ggml type, ne, values)
    tensors: BTreeMap<String, (u32, Vec<usize>, Vec<f64>)>,
}

/// A cursor over the file's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
}

fn parse(bytes: &[u8]) -> Gguf {
    let mut c = Cursor { b: bytes, p: 0 };
    assert_eq!(c.take(4), b"GGUF");
    let version = c.u32();
    let (nt, nkv) = (c.u64(), c.u64());
    let mut kv = BTreeMap::new();
    for _ in 0..nkv {
        let key = c.string();
        let v = match c.u32() {
            4 => Kv::U32(c.u32()),
            6 => Kv::F32(f32::from_le_bytes(c.take(4).try_into().unwrap())),
            8 => Kv::Str(c.string()),
            other => Kv::Other(other),
        };
        assert!(
            !matches!(v, Kv::Other(_)),
            "{key}: a type this writer never writes"
        );
        kv.insert(key, v);
    }
    let mut infos = Vec::new();
    for _ in 0..nt {
        let name = c.string();
        let nd = c.u32();
        let ne: Vec<usize> = (0..nd).map(|_| c.u64() as usize).collect();
        let ty = c.u32();
        let off = c.u64() as usize;
        infos.push((name, ne, ty, off));
    }
    let p = c.p;
    let data = p.div_ceil(32) * 32;
    let tensors = infos
        .into_iter()
        .map(|(name, ne, ty, off)| {
            let n: usize = ne.iter().product();
            let raw = &bytes[data + off..];
            let v: Vec<f64> = match ty {
                0 => raw[..4 * n]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                1 => raw[..2 * n]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect(),
                30 => raw[..2 * n]
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect(),
                // ggml-quants.c dequantize_row_q8_0: 34-byte blocks, f16 d then 32 i8 q: d·q.
                8 => raw[..n / 32 * 34]
                    .chunks_exact(34)
                    .flat_map(|b| {
                        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f64();
                        b[2..].iter().map(move |&q| d * (q as i8) as f64)
                    })
                    .collect(),
                t => panic!("{name}: ggml type {t}"),
            };
            (name, (ty, ne, v))
        })
        .collect();
    Gguf {
        version,
        kv,
        tensors,
    }
}

/// llama.cpp's gpt-oss tensors a LoRA changes (gguf-py `constants.py` `TENSOR_NAMES`,
/// `MODEL_ARCH.GPT_OSS`) and the module each is.
const NAMES: [(&str, &str); 10] = [
    ("attn_q", "q_proj"),
    ("attn_k", "k_proj"),
    ("attn_v", "v_proj"),
    ("attn_output", "o_proj"),
    ("ffn_gate_inp", "router"),
    ("ffn_gate_exps", "gate_proj"),
    ("ffn_up_exps", "up_proj"),
    ("ffn_down_exps", "down_proj"),
    ("token_embd", "embed_tokens"),
    ("output", "lm_head"),
];

/// (layer, module) of a base tensor name `blk.N.<t>.weight` / `<t>.weight`.
fn module_of(base: &str) -> (Option<usize>, &'static str) {
    let t = base.strip_suffix(".weight").expect(".weight");
    let (layer, t) = match t.strip_prefix("blk.") {
        Some(r) => {
            let (n, t) = r.split_once('.').unwrap();
            (Some(n.parse().unwrap()), t)
        }
        None => (None, t),
    };
    let m = NAMES.iter().find(|(g, _)| *g == t).expect(t).1;
    (layer, m)
}

fn alpha(f: &Gguf) -> f64 {
    match f.kv["adapter.lora.alpha"] {
        Kv::F32(a) => a as f64,
        ref other => panic!("adapter.lora.alpha {other:?}"),
    }
}

/// ΔW of every pair of the file as llama.cpp applies it: scale = alpha / `lora_b->ne[0]`
/// (`get_scale`), ΔW = scale·B·A with A = `lora_a` [in, r] and B = `lora_b` [r, out] row-major
/// (`build_lora_mm`: `mul_mat(b, mul_mat(a, x))`), an expert e's slice of `[in, r, E]` /
/// `[r, out, E]` (`build_lora_mm_id`), and the token embedding's row v = scale·`lora_b`·`lora_a`
/// row v (`build_inp_embd`: `mul_mat(b, get_rows(a, tokens))`), ΔW (V × H).
fn dense_gguf(f: &Gguf) -> BTreeMap<Key, Mat<f64>> {
    let alpha = alpha(f);
    let mut out = BTreeMap::new();
    for (name, (_, ane, a)) in &f.tensors {
        let Some(base) = name.strip_suffix(".lora_a") else {
            continue;
        };
        let (_, bne, b) = &f.tensors[&format!("{base}.lora_b")];
        let r = bne[0];
        let scale = if alpha != 0.0 { alpha / r as f64 } else { 1.0 };
        let (layer, module) = module_of(base);
        if module == "embed_tokens" {
            let (v, h) = (ane[1], bne[1]);
            let m = Mat::from_fn(v, h, |i, c| {
                scale * (0..r).map(|j| a[i * r + j] * b[c * r + j]).sum::<f64>()
            });
            out.insert((layer, module.to_string(), None), m);
            continue;
        }
        let (inn, outd) = (ane[0], bne[1]);
        let experts = ane.get(2).copied();
        for e in 0..experts.unwrap_or(1) {
            let (ao, bo) = (e * r * inn, e * outd * r);
            let m = Mat::from_fn(outd, inn, |o, i| {
                scale
                    * (0..r)
                        .map(|j| b[bo + o * r + j] * a[ao + j * inn + i])
                        .sum::<f64>()
            });
            out.insert((layer, module.to_string(), experts.map(|_| e)), m);
        }
    }
    out
}

fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let n = b.norm_l2();
    let d = (a - b).norm_l2();
    if n == 0.0 {
        d
    } else {
        d / n
    }
}

/// Every source delta is in the file with its ΔW within `tol(key)`; a pair the source does not
/// adapt (an expert slice) is zero.
fn assert_same(
    src: &BTreeMap<Key, Mat<f64>>,
    out: &BTreeMap<Key, Mat<f64>>,
    tol: impl Fn(&Key) -> f64,
    what: &str,
) {
    for (k, m) in src {
        let got = out
            .get(k)
            .unwrap_or_else(|| panic!("{what}: {k:?} missing from the file"));
        let e = rel(got, m);
        assert!(
            e <= tol(k),
            "{what}: {k:?} differs by {e:e} (tolerance {:e})",
            tol(k)
        );
    }
    for (k, m) in out {
        if !src.contains_key(k) {
            assert_eq!(m.norm_l2(), 0.0, "{what}: {k:?} is not in the source");
        }
    }
}

fn read(path: &Path) -> Gguf {
    parse(&std::fs::read(path).unwrap())
}

#[test]
fn every_layout_family_round_trips_as_llama_cpp_applies_it() {
    for (what, spec) in support::export_families() {
        let tmp = tempfile::tempdir().unwrap();
        let a = open(&{
            synth::write_adapter(&tmp.path().join("src"), &spec).unwrap();
            tmp.path().join("src")
        });
        let out = tmp.path().join("out.gguf");
        let report =
            export_to(&a, &out, &gguf_options(false)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!((report.format, report.engine), ("gguf", Engine::Llamacpp));
        assert_eq!(report.dtype, "F32", "{what}");
        assert!(report.dropped.is_empty(), "{what}: {:?}", report.dropped);
        let src = dense_source(&a);
        assert_same(&src, &dense_gguf(&read(&out)), |_| 1e-6, what);
        assert!(
            report.verified.max_difference <= 1e-5,
            "{what}: {:?}",
            report.verified
        );
        assert_eq!(report.verified.deltas, src.len(), "{what}");
        // lorascope reads its own file back as a GGUF adapter with the source's deltas.
        let back = open(&out);
        assert_eq!(back.format().map(|f| f.as_str()), Some("gguf"), "{what}");
    }
}

#[test]
fn the_real_writers_fixtures_round_trip_as_gguf() {
    for name in ["peft-gpt-oss", "mlx-gpt-oss"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/writers")
            .join(name);
        let a = open(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a.gguf");
        let report =
            export_to(&a, &out, &gguf_options(false)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.dropped.is_empty(), "{name}: {:?}", report.dropped);
        assert_same(&dense_source(&a), &dense_gguf(&read(&out)), |_| 1e-6, name);
    }
}

/// Sizes whose rows are whole Q8_0 blocks (hidden, intermediate and rank multiples of 32), so
/// that both factors of every pair are Q8_0.
fn blocky(pattern: Pattern) -> Spec {
    let dims = Dims {
        layers: 2,
        hidden: 64,
        q_out: 64,
        kv_out: 32,
        experts: 2,
        inter: 32,
    };
    let mut s = Spec::new(dims, pattern);
    s.attn_rank = 32;
    s.expert_rank = 32;
    s
}

/// The a-priori bound of a written type's rounding on ‖ΔW' − ΔW‖_F / ‖ΔW‖_F for ΔW = B·A:
/// each factor's error ‖E‖_F ≤ q·‖X‖_F, so ‖B'A' − BA‖_F ≤ (2q + q²)·‖B‖_F‖A‖_F. q is the unit
/// roundoff for F32 (2⁻²⁴), F16 (2⁻¹¹) and BF16 (2⁻⁸). Q8_0 (ggml-quants.c
/// `quantize_row_q8_0_ref`: d = amax/127 stored as f16, q = round(x/d)) errs by at most
/// d/2 + |d − f16(d)|·127 ≤ (1/2 + 127·2⁻¹¹)·amax/127 per value, and a block of 32 has
/// Σx² ≥ amax², so ‖E‖_F ≤ √32·(1/2 + 127·2⁻¹¹)/127·‖X‖_F: q = 0.0251.
fn rounding(ty: &str) -> f64 {
    match ty {
        "F32" => 2f64.powi(-24),
        "F16" => 2f64.powi(-11),
        "BF16" => 2f64.powi(-8),
        "Q8_0" => 32f64.sqrt() * (0.5 + 127.0 * 2f64.powi(-11)) / 127.0,
        t => panic!("{t}"),
    }
}

/// ‖s·B‖_F·‖A‖_F / ‖ΔW‖_F of every source delta (a fused gate_up's halves share A and split B).
fn conditioning(a: &Adapter) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for d in &a.deltas {
        let (br, bc, b) = read_factor(a, d.b);
        let (_, ac, av) = read_factor(a, d.a);
        let na = av.iter().map(|x| x * x).sum::<f64>().sqrt();
        let rows = |half: Option<usize>| -> f64 {
            (0..br)
                .filter(|o| half.is_none_or(|h| o % 2 == h))
                .flat_map(|o| b[o * bc..(o + 1) * bc].iter())
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        };
        let dense = dense_source(a);
        let halves: Vec<(String, Option<usize>)> = if d.target == Target::GateUp {
            vec![("gate_proj".into(), Some(0)), ("up_proj".into(), Some(1))]
        } else {
            vec![(d.target.to_string(), None)]
        };
        for (t, half) in halves {
            let key = (d.layer, t, d.expert);
            let n = dense[&key].norm_l2();
            out.insert(key, d.scale.abs() * rows(half) * na / n);
        }
        let _ = ac;
    }
    out
}

#[test]
fn every_dtype_is_within_its_rounding_bound_and_q8_0_falls_back_like_the_converter() {
    let tmp = tempfile::tempdir().unwrap();
    for (what, spec) in [
        (
            "blocky experts",
            blocky(Pattern::PeftExperts { layers: vec![1] }),
        ),
        (
            "toy experts",
            support::toy_spec(Pattern::PeftExperts { layers: vec![0] }),
        ),
    ] {
        let dir = tmp.path().join(what);
        synth::write_adapter(&dir, &spec).unwrap();
        let a = open(&dir);
        let src = dense_source(&a);
        let cond = conditioning(&a);
        for (dtype, q8_0, name) in [
            (Some(safetensors::Dtype::F32), false, "F32"),
            (Some(safetensors::Dtype::F16), false, "F16"),
            (Some(safetensors::Dtype::BF16), false, "BF16"),
            (None, true, "Q8_0"),
        ] {
            let out = tmp.path().join(format!("{what}-{name}.gguf"));
            let mut opts = gguf_options(q8_0);
            opts.dtype = dtype;
            let report =
                export_to(&a, &out, &opts).unwrap_or_else(|e| panic!("{what} {name}: {e}"));
            assert_eq!(report.dtype, name);
            let f = read(&out);
            let q = rounding(name);
            assert_same(
                &src,
                &dense_gguf(&f),
                |k| (2.0 * q + q * q) * cond[k] + 1e-9,
                &format!("{what} {name}"),
            );
            // Q8_0 where rows are whole 32-value blocks, F16 elsewhere (convert_hf_to_gguf.py
            // `prepare_tensors` falls back when gguf-py raises QuantError).
            for (t, (ty, ne, _)) in &f.tensors {
                let want = match (name, ne[0] % 32) {
                    ("Q8_0", 0) => 8,
                    ("Q8_0", _) => 1,
                    ("F16", _) => 1,
                    ("BF16", _) => 30,
                    _ => 0,
                };
                assert_eq!(*ty, want, "{what} {name}: {t} {ne:?}");
            }
            let fell_back = report.notes.iter().any(|n| n.contains("as F16"));
            assert_eq!(
                fell_back,
                name == "Q8_0" && what == "toy experts",
                "{what} {name}"
            );
            assert!(
                report.verified.max_difference <= report.verified.tolerance,
                "{what} {name}: {:?}",
                report.verified
            );
        }
    }
}

#[test]
fn a_gguf_adapter_re_exports_as_q8_0_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = blocky(Pattern::Tinker3d);
    spec.expert_rank = 32;
    let path = tmp.path().join("src").join("adapter.gguf");
    synth::gguf::write_adapter(&path, &spec, GgmlType::Q8_0).unwrap();
    let a = open(&path);
    let out = tmp.path().join("again.gguf");
    let report = export_to(&a, &out, &gguf_options(false)).unwrap();
    assert_eq!(report.dtype, "Q8_0");
    // B carries the source's scale alpha / r = 1/2 now (alpha = r in the output), so its blocks
    // are quantised again: within Q8_0's bound; A (unchanged values d·q) stays bit for bit.
    let q = rounding("Q8_0");
    let cond = conditioning(&a);
    assert_same(
        &dense_source(&a),
        &dense_gguf(&read(&out)),
        |k| (2.0 * q + q * q) * cond[k],
        "gguf → gguf",
    );
    let (src, back) = (read(&path), read(&out));
    for (name, (_, _, v)) in &src.tensors {
        if name.ends_with(".lora_a") && !name.contains("_exps") {
            assert_eq!(v, &back.tensors[name].2, "{name}");
        }
    }
}

fn sigma(m: &Mat<f64>) -> Vec<f64> {
    let mut s: Vec<f64> = m.singular_values().unwrap();
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

#[test]
fn truncation_errors_are_the_predicted_tail_of_each_half() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![0, 1] });
    spec.expert_rank = 3;
    let dir = tmp.path().join("src");
    synth::write_adapter(&dir, &spec).unwrap();
    let a = open(&dir);
    let src = dense_source(&a);
    let out = tmp.path().join("r1.gguf");
    let mut opts = gguf_options(false);
    opts.rank = RankRule::Rank(1);
    let report = export_to(&a, &out, &opts).unwrap();
    let got = dense_gguf(&read(&out));
    // Each of gate and up is cut on its own: its error is its own tail, ‖ΔW − ΔW₁‖ / ‖ΔW‖ =
    // (Σ_{i>1} σᵢ²)^½ / (Σ σᵢ²)^½, and the report says the same.
    let reported: BTreeMap<Key, f64> = report
        .deltas
        .iter()
        .map(|d| ((d.layer, d.target.to_string(), d.expert), d.relative_error))
        .collect();
    assert_eq!(reported.len(), src.len());
    for (k, m) in &src {
        let s = sigma(m);
        let total: f64 = s.iter().map(|x| x * x).sum();
        let tail = (s.iter().skip(1).map(|x| x * x).sum::<f64>() / total).sqrt();
        let e = rel(&got[k], m);
        assert!((e - tail).abs() < 1e-5, "{k:?}: {e} vs {tail}");
        assert!((reported[k] - tail).abs() < 1e-9, "{k:?}");
    }
    assert_eq!(report.r, 1);
}

#[test]
fn the_written_file_follows_llama_cpp_loader_rules() {
    let tmp = tempfile::tempdir().unwrap();
    // Attention (q_proj at rank 2, the rest at 3: one alpha for several ranks) and packed
    // experts (rank 2) on one layer of gpt-oss-20b.
    let mut spec = support::toy_spec(Pattern::PeftExperts { layers: vec![1] });
    spec.rank_pattern = vec![("q_proj".into(), 2)];
    let dir = tmp.path().join("peft");
    synth::write_adapter(&dir, &spec).unwrap();
    let a = open(&dir);
    let out = tmp.path().join("a.gguf");
    let report = export_to(&a, &out, &gguf_options(false)).unwrap();
    let f = read(&out);
    let kv = |k: &str| f.kv.get(k).cloned();
    // gguf.cpp reads versions 2 and 3; gguf-py writes 3.
    assert_eq!(f.version, 3);
    // llama-adapter.cpp: `general.type` must be "adapter" ("expect general.type to be
    // 'adapter'"), `adapter.type` "lora", `general.architecture` the base's
    // (`llm_arch_from_string`, "model arch and LoRA arch mismatch"): gpt-oss is
    // LLM_ARCH_OPENAI_MOE, named "gpt-oss" in src/llama-arch.cpp `LLM_ARCH_NAMES`.
    assert_eq!(kv("general.type"), Some(Kv::Str("adapter".into())));
    assert_eq!(kv("adapter.type"), Some(Kv::Str("lora".into())));
    assert_eq!(kv("general.architecture"), Some(Kv::Str("gpt-oss".into())));
    // `adapter.lora.alpha` is read with gguf_get_val_f32, which asserts the type F32 (ggml
    // gguf.cpp): one alpha, the largest rank written (scale 1 for rank-3 pairs).
    assert_eq!(kv("adapter.lora.alpha"), Some(Kv::F32(3.0)));
    assert_eq!(report.r, 3);
    assert_eq!(
        kv("general.base_model.0.repo_url"),
        Some(Kv::Str("https://huggingface.co/openai/gpt-oss-20b".into()))
    );
    let mut bases = std::collections::BTreeSet::new();
    for name in f.tensors.keys() {
        // The loader pairs `<base>.lora_a` with `<base>.lora_b` and throws on any other suffix
        // ("LoRA tensor '…' has unexpected suffix"), and on a lone half ("is missing one
        // component").
        let base = name
            .strip_suffix(".lora_a")
            .or_else(|| name.strip_suffix(".lora_b"))
            .unwrap_or_else(|| panic!("{name}: not .lora_a / .lora_b"));
        assert!(f.tensors.contains_key(&format!("{base}.lora_a")));
        assert!(f.tensors.contains_key(&format!("{base}.lora_b")));
        // `model.get_tensor(base)` must find it: gpt-oss's names (gguf-py MODEL_ARCH.GPT_OSS).
        module_of(base);
        // ggml's GGML_MAX_NAME: a tensor name is shorter than 64 bytes.
        assert!(name.len() < 64, "{name}");
        bases.insert(base.to_string());
    }
    let hidden = Dims::TOY.hidden;
    for base in &bases {
        let (_, ane, _) = &f.tensors[&format!("{base}.lora_a")];
        let (_, bne, _) = &f.tensors[&format!("{base}.lora_b")];
        let (layer, module) = module_of(base);
        // The base tensor's ne ([in, out] or [in, out, E]; convert_hf_to_gguf.py writes the
        // HF weight (out, in) as is, and gpt-oss's experts transposed to (E, out, in)).
        let (outd, inn) = match module {
            "q_proj" => (Dims::TOY.q_out, hidden),
            "k_proj" | "v_proj" => (Dims::TOY.kv_out, hidden),
            "o_proj" => (hidden, Dims::TOY.q_out),
            "gate_proj" | "up_proj" => (Dims::TOY.inter, hidden),
            "down_proj" => (hidden, Dims::TOY.inter),
            m => panic!("{m}"),
        };
        // `model_tensor->ne[0] != a->ne[0] || model_tensor->ne[1] != b->ne[1]` → "has incorrect
        // shape"; `a->ne[1] != b->ne[0]` → "lora_a tensor is not transposed".
        assert_eq!(ane[0], inn, "{base}");
        assert_eq!(bne[1], outd, "{base}");
        assert_eq!(ane[1], bne[0], "{base}");
        let expert = ["gate_proj", "up_proj", "down_proj"].contains(&module);
        let rank = match module {
            "q_proj" => 2,
            _ if expert => 2,
            _ => 3,
        };
        assert_eq!(bne[0], rank, "{base}");
        let _ = layer;
        // Experts: `build_lora_mm_id` runs ggml_mul_mat_id on lora_a and lora_b with the
        // router's expert ids, so both are 3-D with the base's E (gpt-oss-20b: 32) experts.
        if expert {
            assert_eq!((ane.len(), bne.len()), (3, 3), "{base}");
            assert_eq!((ane[2], bne[2]), (32, 32), "{base}");
        } else {
            assert_eq!((ane.len(), bne.len()), (2, 2), "{base}");
        }
    }
    // gpt-oss's fused gate_up is split into the gate and up tensors of the base's GGUF (the
    // converter's default, without --fuse-gate-up-exps); when ranks are kept both halves carry
    // the same A, a copy of PEFT's shared lora_A.
    let (_, _, ga) = &f.tensors["blk.1.ffn_gate_exps.weight.lora_a"];
    let (_, _, ua) = &f.tensors["blk.1.ffn_up_exps.weight.lora_a"];
    assert_eq!(ga, ua);
    assert!(!f.tensors.contains_key("blk.0.ffn_gate_exps.weight.lora_a"));
    assert!(report.notes.iter().any(|n| n.contains("ffn_up_exps")));
    // The tensor data is aligned as gguf.cpp requires (offsets multiple of 32; checked by the
    // parse above reading every tensor at data + offset) and lorascope's own reader accepts it.
    open(&out);
}

#[test]
fn what_llama_cpp_cannot_apply_is_refused_or_dropped_and_said() {
    let tmp = tempfile::tempdir().unwrap();
    // A full router saved by modules_to_save: a llama.cpp adapter holds factor pairs only.
    let dir = tmp.path().join("router");
    synth::write_adapter(&dir, &support::toy_spec(Pattern::AttentionRouter)).unwrap();
    let a = open(&dir);
    let out = tmp.path().join("r.gguf");
    match export_to(&a, &out, &gguf_options(false)) {
        Err(lorascope::Error::Export(ExportError::Refused { items })) => {
            assert!(
                items.iter().all(|d| d.reason.contains("llamacpp.not-lora")),
                "{items:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
    let mut opts = gguf_options(false);
    opts.drop_unservable = true;
    let report = export_to(&a, &out, &opts).unwrap();
    assert!(!report.dropped.is_empty());
    assert!(out.exists());
    // A PEFT adapter for another engine's output options is no GGUF.
    let mut vllm = gguf_options(false);
    vllm.engine = Engine::Vllm;
    assert!(matches!(
        export_to(&a, &tmp.path().join("v.gguf"), &vllm),
        Err(lorascope::Error::Export(ExportError::Option(_)))
    ));
    // An adapter of another model: llama.cpp's gpt-oss layout is the one GGUF export writes.
    let mut other = support::toy_spec(Pattern::Attention);
    other.base_model = "meta-llama/Llama-3.2-1B".into();
    let dir = tmp.path().join("llama");
    synth::write_adapter(&dir, &other).unwrap();
    match export_to(
        &open(&dir),
        &tmp.path().join("l.gguf"),
        &gguf_options(false),
    ) {
        Err(lorascope::Error::Export(ExportError::Option(m))) => {
            assert!(m.contains("gpt-oss"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn export_never_writes_into_a_cache_over_an_existing_file_or_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    synth::write_adapter(&src_dir, &support::toy_spec(Pattern::Attention)).unwrap();
    let a = open(&src_dir);
    let before = support::fingerprint(&src_dir);
    let refused = |out: &Path, opts: &Options| match export_to(&a, out, opts) {
        Err(lorascope::Error::Export(ExportError::Out { why, .. })) => why,
        other => panic!("{}: {other:?}", out.display()),
    };
    let cache = tmp.path().join("hub");
    std::fs::create_dir_all(cache.join("models--x--y")).unwrap();
    let mut opts = gguf_options(false);
    opts.protected = vec![cache.clone()];
    assert!(refused(&cache.join("models--x--y/a.gguf"), &opts).contains("cache"));
    assert!(refused(&tmp.path().join("src/../hub/a.gguf"), &opts).contains("cache"));
    assert!(refused(&src_dir.join("a.gguf"), &opts).contains("source"));
    assert!(refused(&tmp.path().join("a.safetensors"), &opts).contains(".gguf"));
    std::fs::create_dir_all(tmp.path().join("dir.gguf")).unwrap();
    assert!(refused(&tmp.path().join("dir.gguf"), &opts).contains("folder"));
    // An existing file without --force; with it, replaced by the export.
    let out = tmp.path().join("a.gguf");
    std::fs::write(&out, b"mine").unwrap();
    assert!(refused(&out, &opts).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    opts.force = true;
    export_to(&a, &out, &opts).unwrap();
    assert_eq!(read(&out).version, 3);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lorascope-export"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(support::fingerprint(&src_dir), before);
}

#[test]
fn a_kill_while_writing_leaves_no_file_and_the_cli_reports_in_json() {
    let home = tempfile::tempdir().unwrap();
    let src_dir = home.path().join("src");
    synth::write_adapter(
        &src_dir,
        &support::toy_spec(Pattern::PeftExperts { layers: vec![0] }),
    )
    .unwrap();
    let out = home.path().join("out.gguf");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "export",
            src_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let first = args(&[]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    support::kill_when_staged(home.path(), &first, "out.gguf");
    assert!(!out.exists(), "a killed export left --out");
    // A later scan of the folder does not see the staged file (it is in a hidden folder).
    let seen = discovery::discover_path(home.path());
    assert!(
        seen.iter().all(|s| !s.id.contains("lorascope-export")),
        "{seen:?}"
    );

    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        support::lorascope_at_home(home.path(), &a)
    };
    let o = run(&["--dtype", "q8_0", "--rank", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["engine"], "llamacpp");
    assert_eq!(j["dtype"], "Q8_0");
    assert_eq!(j["r"], 1);
    assert!(j["deltas"][0].get("relative_error").is_some());
    // The file exists now: a second run refuses it, a run for vLLM is no GGUF, q8_0 is GGUF's.
    let o = run(&[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let o = run(&["--force", "--for", "vllm"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("llama.cpp"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = support::lorascope_at_home(
        home.path(),
        &[
            "export",
            src_dir.to_str().unwrap(),
            "--out",
            "x",
            "--dtype",
            "q8_0",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format gguf"));
}

/// Values exactly representable in f32.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = synth::Rng::new(seed);
    (0..n).map(|_| (rng.normal() * 0.3) as f32 as f64).collect()
}

#[test]
fn embedding_and_router_lora_are_written_the_way_llama_cpp_applies_them() {
    let (h, r, vocab) = (Dims::TOY.hidden, 2, 20);
    let tmp = tempfile::tempdir().unwrap();
    // mlx-lm (mlx_lm/tuner/lora.py): LoRAEmbedding lora_a (V, r), lora_b (r, H), ΔW (V, H) =
    // scale·lora_a·lora_b; its router is a LoRALinear (→ ffn_gate_inp).
    let mut spec = support::toy_spec(Pattern::Mlx { layers: 1 });
    spec.attn_rank = r;
    let (ea, eb) = (values(vocab * r, 11), values(r * h, 12));
    let dir = tmp.path().join("mlx");
    support::write_with_extra(
        &dir,
        &spec,
        &[
            (
                "model.embed_tokens.lora_a".into(),
                vec![vocab, r],
                ea.clone(),
            ),
            ("model.embed_tokens.lora_b".into(), vec![r, h], eb.clone()),
        ],
        |_| {},
    );
    let a = open(&dir);
    let out = tmp.path().join("e.gguf");
    let report = export_to(&a, &out, &gguf_options(false)).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let f = read(&out);
    // llama-adapter.cpp, token_embd ("A and B are flipped"): model ne [H, V] must equal
    // [lora_b ne[1], lora_a ne[1]]; llm_build_inp_embd takes get_rows(lora_a, tokens), so lora_a
    // is [r, V] and lora_b [r, H].
    let (_, ane, _) = &f.tensors["token_embd.weight.lora_a"];
    let (_, bne, _) = &f.tensors["token_embd.weight.lora_b"];
    assert_eq!((ane.clone(), bne.clone()), (vec![r, vocab], vec![r, h]));
    let l = Dims::TOY.layers - 1;
    assert!(f
        .tensors
        .contains_key(&format!("blk.{l}.ffn_gate_inp.weight.lora_a")));
    let got = dense_gguf(&f);
    let want = Mat::from_fn(vocab, h, |i, c| {
        spec.alpha * (0..r).map(|j| ea[i * r + j] * eb[j * h + c]).sum::<f64>()
    });
    let e = rel(&got[&(None, "embed_tokens".to_string(), None)], &want);
    assert!(e < 1e-6, "{e}");
    assert_same(&dense_source(&a), &got, |_| 1e-6, "mlx with an embedding");
}

#[test]
fn lora_biases_are_refused_for_llama_cpp_and_dora_always() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = support::toy_spec(Pattern::Attention);
    let (q, h) = (Dims::TOY.q_out, Dims::TOY.hidden);
    let _ = h;
    let dir = tmp.path().join("bias");
    support::write_with_extra(
        &dir,
        &spec,
        &[(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias".into(),
            vec![q],
            values(q, 3),
        )],
        |_| {},
    );
    match export_to(
        &open(&dir),
        &tmp.path().join("b.gguf"),
        &gguf_options(false),
    ) {
        Err(lorascope::Error::Export(ExportError::Refused { items })) => {
            assert_eq!(items.len(), 1, "{items:?}");
            assert!(items[0].reason.contains("llamacpp.lora-bias"), "{items:?}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tmp.path().join("dora");
    support::write_with_extra(&dir, &spec, &[], |c| c["use_dora"] = true.into());
    let mut opts = gguf_options(false);
    opts.drop_unservable = true;
    match export_to(&open(&dir), &tmp.path().join("d.gguf"), &opts) {
        Err(lorascope::Error::Export(ExportError::Refused { items })) => {
            assert!(items[0].reason.contains("DoRA"), "{items:?}");
        }
        other => panic!("{other:?}"),
    }
}
