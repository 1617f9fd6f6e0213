//! Acceptance of issue 2: discovery, header-only reading, adapter_config.json, the layout model
//! for every layout of the survey, the CLI contract, and that the cache is never written.
//! Fixtures are written by `lorascope::synth` into temporary folders.

mod support;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::format;
use lorascope::adapter::layout::{
    Delta, DeltaKey, ExpertLayout, LayoutOptions, LoraBLayout, Pick, Role,
};
use lorascope::adapter::{Adapter, Kind, Pattern as Pat};
use lorascope::synth::{self, Dims, Generated, Pattern, Spec, TensorData};
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use support::{fingerprint, lorascope, Hub};

// ---------------------------------------------------------------------------------------------
// helpers

/// TOY sizes with 24 layers, so that experts can sit on layers 7, 15 and 23 as in the survey.
const TOY24: Dims = Dims {
    layers: 24,
    ..Dims::TOY
};

fn spec(dims: Dims, pattern: Pattern, r: usize, er: usize) -> Spec {
    let mut s = Spec::new(dims, pattern);
    s.attn_rank = r;
    s.expert_rank = er;
    s
}

fn scan_paths(paths: &[&Path], opts: LayoutOptions) -> Vec<Adapter> {
    discovery::scan(&ScanRequest {
        cache: None,
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        layout: opts,
    })
}

fn scan_cache(root: &Path) -> Vec<Adapter> {
    discovery::scan(&ScanRequest {
        cache: Some(root.to_path_buf()),
        ..Default::default()
    })
}

fn only(mut v: Vec<Adapter>) -> Adapter {
    assert_eq!(v.len(), 1, "expected one adapter, got {:?}", ids(&v));
    v.pop().expect("one")
}

fn ids(v: &[Adapter]) -> Vec<&str> {
    v.iter().map(|a| a.id.as_str()).collect()
}

/// A synthetic adapter written to a temporary folder and loaded back.
struct Written {
    dir: tempfile::TempDir,
    gen: Generated,
    adapter: Adapter,
}

impl Written {
    fn path(&self) -> PathBuf {
        self.dir.path().join("adapter")
    }
    fn reload(&self, opts: LayoutOptions) -> Adapter {
        only(scan_paths(&[&self.path()], opts))
    }
}

fn write(s: &Spec) -> Written {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("adapter");
    let gen = synth::write_adapter(&path, s).expect("synth");
    let opts = LayoutOptions {
        lora_b_layout: s.lora_b_layout,
        ..Default::default()
    };
    let adapter = only(scan_paths(&[&path], opts));
    Written { dir, gen, adapter }
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-12)
}

/// Deltas whose factors, read from the file through their `Pick`s, do not carry the spectrum
/// synth planted for that (layer, target, expert). Empty = every slice points at the right data.
fn spectrum_mismatches(a: &Adapter, g: &Generated) -> Vec<String> {
    let planted: BTreeMap<_, _> = g
        .planted
        .iter()
        .map(|p| {
            (
                DeltaKey::new(Some(p.layer), p.target.as_str(), p.expert),
                &p.sigma,
            )
        })
        .collect();
    let mut bad = Vec::new();
    for d in &a.deltas {
        let sigma = planted
            .get(&d.key())
            .unwrap_or_else(|| panic!("delta {:?} was not planted", d.key()));
        let (b, af) = (support::read_factor(a, d.b), support::read_factor(a, d.a));
        assert_eq!(
            (b.0, b.1, af.0, af.1),
            (d.out_dim, d.rank, d.rank, d.in_dim)
        );
        let (t1, t2) = support::spectral_traces(b, af);
        let w1: f64 = sigma.iter().map(|s| s * s).sum();
        let w2: f64 = sigma.iter().map(|s| s.powi(4)).sum();
        if !close(t1, w1, 1e-4) || !close(t2, w2, 1e-4) {
            bad.push(format!("{:?}: Σσ² {t1} vs {w1}", d.key()));
        }
    }
    bad
}

/// Every planted delta is found exactly once and its slices hold the planted spectrum.
fn assert_planted(a: &Adapter, g: &Generated) {
    assert_eq!(
        a.deltas.len(),
        g.planted.len(),
        "one delta per planted spectrum"
    );
    let keys: BTreeSet<_> = a.deltas.iter().map(Delta::key).collect();
    assert_eq!(keys.len(), a.deltas.len(), "delta keys are unique");
    let bad = spectrum_mismatches(a, g);
    assert!(bad.is_empty(), "wrong slices: {bad:?}");
}

fn deltas_of<'a>(a: &'a Adapter, layer: usize, target: &str) -> Vec<&'a Delta> {
    a.deltas
        .iter()
        .filter(|d| d.layer == Some(layer) && d.target == target)
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// layouts of the survey at toy sizes, with the planted spectra read back through the slices

#[test]
fn pattern_a_attention_qkvo() {
    let s = spec(Dims::TOY, Pattern::Attention, 4, 0);
    let w = write(&s);
    let a = &w.adapter;
    assert_eq!((a.kind, a.pattern()), (Kind::Lora, Pat::AttentionOnly));
    assert_eq!(a.error, None);
    assert_eq!(a.tensors.len(), 3 * 8);
    assert_eq!(a.deltas.len(), 3 * 4);
    assert_eq!(
        a.targets(),
        strings(&["k_proj", "o_proj", "q_proj", "v_proj"])
    );
    assert_eq!(a.attention_rank(), Some(4));
    assert_eq!(a.expert_rank(), None);
    assert_eq!(a.expert_layout(), None);
    assert!(a.expert_layers().is_empty());
    assert_eq!(a.layer_indices(), vec![0, 1, 2]);
    assert_eq!(a.dtypes(), strings(&["F32"]));
    assert_eq!(a.base_model().as_deref(), Some("openai/gpt-oss-20b"));
    for d in &a.deltas {
        assert_eq!((d.out_dim, d.in_dim), s.dims.attn_shape(d.target.as_str()));
        assert_eq!((d.a.pick, d.b.pick), (Pick::All, Pick::All));
        assert_eq!(d.scale, 16.0 / 4.0, "PEFT: s = lora_alpha / r");
    }
    assert_planted(a, &w.gen);
}

#[test]
fn pattern_a2_q_v_only() {
    let mut s = spec(Dims::TOY, Pattern::Attention, 8, 0);
    s.targets = vec!["q_proj", "v_proj"];
    let w = write(&s);
    let a = &w.adapter;
    assert_eq!(a.pattern(), Pat::AttentionOnly);
    assert_eq!(a.targets(), strings(&["q_proj", "v_proj"]));
    assert_eq!(a.tensors.len(), 3 * 4);
    assert_eq!(a.attention_rank(), Some(8));
    assert_planted(a, &w.gen);
}

#[test]
fn rank_and_alpha_patterns_follow_peft_rule() {
    let mut s = spec(Dims::TOY, Pattern::Attention, 4, 0);
    s.rslora = true;
    // First match wins; a key matches a whole trailing run of path components.
    s.rank_pattern = vec![
        ("layers.0.self_attn.q_proj".into(), 1),
        ("q_proj".into(), 2),
        ("k".into(), 3), // matches no module: "k" is not a whole component
    ];
    s.alpha_pattern = vec![("v_proj".into(), 3.0)];
    let w = write(&s);
    let a = &w.adapter;
    for d in &a.deltas {
        let want_r = match (d.layer, d.target.as_str()) {
            (Some(0), "q_proj") => 1,
            (_, "q_proj") => 2,
            _ => 4,
        };
        let alpha = if d.target == "v_proj" { 3.0 } else { 16.0 };
        assert_eq!(d.rank, want_r, "{:?}", d.key());
        assert!(
            close(d.scale, alpha / (want_r as f64).sqrt(), 1e-12),
            "rsLoRA scale {:?}",
            d.key()
        );
    }
    assert_planted(a, &w.gen);
}

#[test]
fn pattern_b_router_saved_as_full_tensors() {
    let w = write(&spec(Dims::TOY, Pattern::AttentionRouter, 4, 0));
    let a = &w.adapter;
    assert_eq!((a.kind, a.pattern()), (Kind::Lora, Pat::AttentionRouter));
    assert_eq!(a.tensors.len(), 3 * 10);
    assert_eq!(a.full.len(), 3 * 2);
    for f in &a.full {
        assert_eq!(f.target, "router");
        let e = Dims::TOY.experts;
        assert!(
            f.shape == vec![e, Dims::TOY.hidden] || f.shape == vec![e],
            "{f:?}"
        );
    }
    assert_eq!(
        a.targets(),
        strings(&["k_proj", "o_proj", "q_proj", "router", "v_proj"])
    );
    assert_eq!(a.expert_rank(), None, "a saved router is not expert LoRA");
    assert_planted(a, &w.gen);
}

#[test]
fn pattern_c_peft_per_expert_on_selected_layers() {
    let layers = vec![7, 15, 23];
    let s = spec(
        TOY24,
        Pattern::PeftExperts {
            layers: layers.clone(),
        },
        4,
        2,
    );
    let w = write(&s);
    let a = &w.adapter;
    let (e_n, r) = (TOY24.experts, 2);
    assert_eq!((a.kind, a.pattern()), (Kind::Lora, Pat::ExpertsPerExpert));
    assert_eq!(a.expert_layout(), Some(ExpertLayout::PerExpert));
    assert_eq!(a.expert_rank(), Some(r), "per-expert r, not r·E");
    assert_eq!(a.attention_rank(), Some(4));
    assert_eq!(a.experts(), Some(e_n));
    assert_eq!(a.expert_layers(), layers);
    assert_eq!(a.layer_indices().len(), 24);
    for l in 0..24 {
        for (target, out, inn, key) in [
            (
                "gate_up_proj",
                2 * TOY24.inter,
                TOY24.hidden,
                "experts.base_layer.lora_A.weight",
            ),
            (
                "down_proj",
                TOY24.hidden,
                TOY24.inter,
                "experts.lora_A.weight",
            ),
        ] {
            let ds = deltas_of(a, l, target);
            if !layers.contains(&l) {
                assert!(ds.is_empty(), "layer {l} has no expert LoRA");
                continue;
            }
            assert_eq!(ds.len(), e_n, "one delta per expert, layer {l} {target}");
            for (e, d) in ds.iter().enumerate() {
                assert_eq!(d.expert, Some(e));
                assert_eq!((d.rank, d.out_dim, d.in_dim), (r, out, inn));
                assert_eq!(
                    d.a.pick,
                    Pick::Rows {
                        start: e * r,
                        len: r
                    }
                );
                assert_eq!(
                    d.b.pick,
                    Pick::Cols {
                        start: e,
                        step: e_n,
                        len: r
                    }
                );
                assert!(
                    a.tensors[d.a.tensor].info.name.ends_with(key),
                    "{target} from {key}"
                );
                assert_eq!(a.tensors[d.a.tensor].info.shape, vec![r * e_n, inn]);
                assert_eq!(d.scale, 16.0 / r as f64, "rank_pattern's r sets the scale");
            }
        }
    }
    assert_planted(a, &w.gen);
}

#[test]
fn pattern_c_expert_major_b_needs_the_switch() {
    let mut s = spec(TOY24, Pattern::PeftExperts { layers: vec![7] }, 4, 2);
    s.lora_b_layout = LoraBLayout::ExpertMajor;
    let w = write(&s);
    let a = &w.adapter;
    for (e, d) in deltas_of(a, 7, "down_proj").iter().enumerate() {
        assert_eq!(
            d.b.pick,
            Pick::Cols {
                start: e * 2,
                step: 1,
                len: 2
            }
        );
    }
    assert_planted(a, &w.gen);
    // Read with PEFT's default column order, the same file gives other experts' columns.
    let wrong = w.reload(LayoutOptions::default());
    assert!(!spectrum_mismatches(&wrong, &w.gen).is_empty());
}

#[test]
fn pattern_d_tinker_3d_broadcast() {
    let s = spec(Dims::TOY, Pattern::Tinker3d, 4, 2);
    let w = write(&s);
    let a = &w.adapter;
    let e_n = Dims::TOY.experts;
    assert_eq!((a.kind, a.pattern()), (Kind::Lora, Pat::ExpertsShared3d));
    assert_eq!(a.expert_layout(), Some(ExpertLayout::Shared3d));
    assert_eq!(a.expert_rank(), Some(2));
    assert_eq!(a.attention_rank(), Some(4));
    assert_eq!(a.expert_layers(), vec![0, 1, 2]);
    assert!(a
        .tensors
        .iter()
        .any(|t| t.info.name.contains(".attn.q_proj.")));
    assert_eq!(
        a.targets(),
        strings(&[
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ])
    );
    for l in 0..3 {
        assert_eq!(deltas_of(a, l, "q_proj").len(), 1, "attn. is self_attn.");
        for (target, w_name, a_shared) in [
            ("gate_proj", "w1", true),
            ("up_proj", "w3", true),
            ("down_proj", "w2", false),
        ] {
            let ds = deltas_of(a, l, target);
            assert_eq!(ds.len(), e_n, "{target}");
            for (e, d) in ds.iter().enumerate() {
                assert!(a.tensors[d.a.tensor]
                    .info
                    .name
                    .contains(&format!("experts.{w_name}.")));
                let (ia, ib) = if a_shared { (0, e) } else { (e, 0) };
                assert_eq!(d.a.pick, Pick::Index { index: ia }, "{target} A");
                assert_eq!(d.b.pick, Pick::Index { index: ib }, "{target} B");
                assert_eq!(d.expert, Some(e));
            }
        }
    }
    assert_planted(a, &w.gen);
}

#[test]
fn pattern_e_full_weights() {
    let w = write(&spec(
        Dims::TOY,
        Pattern::FullWeights { layers: vec![0, 2] },
        4,
        0,
    ));
    let a = &w.adapter;
    assert_eq!((a.kind, a.pattern()), (Kind::FullWeights, Pat::FullWeights));
    assert!(a.deltas.is_empty());
    assert_eq!(a.full.len(), a.tensors.len());
    assert_eq!(a.layer_indices(), vec![0, 2]);
    assert_eq!(a.attention_rank(), None);
}

#[test]
fn empty_file_is_kind_empty() {
    let w = write(&spec(Dims::TOY, Pattern::Empty, 4, 0));
    let a = &w.adapter;
    assert_eq!(
        (a.kind, a.pattern(), a.error.as_deref()),
        (Kind::Empty, Pat::Empty, None)
    );
    assert_eq!((a.tensors.len(), a.files.len()), (0, 1));
}

#[test]
fn path_arguments_file_folder_and_folder_of_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outputs = dir.path().join("outputs");
    for (run, r) in [("checkpoint-500", 2), ("checkpoint-1000", 4)] {
        synth::write_adapter(
            &outputs.join(run),
            &spec(Dims::TOY, Pattern::Attention, r, 0),
        )
        .expect("synth");
    }
    let found = scan_paths(&[&outputs], LayoutOptions::default());
    let want: Vec<String> = ["checkpoint-1000", "checkpoint-500"]
        .iter()
        .map(|r| outputs.join(r).display().to_string())
        .collect();
    assert_eq!(ids(&found), want, "ids are paths");
    // A single file: its folder's config still applies.
    let file = outputs.join("checkpoint-500/adapter_model.safetensors");
    let a = only(scan_paths(&[&file], LayoutOptions::default()));
    assert_eq!(a.id, file.display().to_string());
    assert_eq!(a.base_model().as_deref(), Some("openai/gpt-oss-20b"));
    assert!(a.deltas.iter().all(|d| d.scale == 16.0 / 2.0));
    // Paths that are not adapters become errors, not panics.
    let missing = dir.path().join("missing");
    let text = outputs.join("checkpoint-500/adapter_config.json");
    for (p, want) in [
        (&missing, "cannot open"),
        (&text, "not a .safetensors or .gguf file"),
    ] {
        let a = only(scan_paths(&[p], LayoutOptions::default()));
        assert_eq!(a.kind, Kind::Error);
        assert!(
            a.error.as_deref().is_some_and(|e| e.contains(want)),
            "{:?}",
            a.error
        );
    }
}

#[test]
fn folder_without_safetensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_cfg = dir.path().join("run");
    fs::create_dir_all(with_cfg.join("checkpoint-500")).expect("mkdir");
    fs::write(with_cfg.join("adapter_config.json"), br#"{"r": 8}"#).expect("cfg");
    fs::write(with_cfg.join("checkpoint-500/adapter_model.bin"), b"PK").expect("bin");
    let bare = dir.path().join("bare");
    fs::create_dir_all(&bare).expect("mkdir");
    fs::write(bare.join("adapter_model.bin"), b"PK").expect("bin");
    for (p, file) in [
        (&with_cfg, "checkpoint-500/adapter_model.bin"),
        (&bare, "adapter_model.bin"),
    ] {
        let a = only(scan_paths(&[p], LayoutOptions::default()));
        assert_eq!(
            (a.kind, a.pattern(), a.error.as_deref()),
            (Kind::NoSafetensors, Pat::NoSafetensors, None)
        );
        assert!(a.notes.iter().any(|n| n.contains(file)), "{:?}", a.notes);
    }
}

#[test]
fn pattern_f_one_adapter_per_folder() {
    let hub = Hub::new();
    let stage = hub.stage();
    let mut ranks = BTreeMap::new();
    for (sub, r) in [("", 4), ("lora-b", 2), ("lora-c", 3)] {
        let mut s = spec(Dims::TOY, Pattern::Attention, r, 0);
        s.targets = vec!["q_proj", "v_proj"];
        synth::write_adapter(&stage.join(sub), &s).expect("synth");
        ranks.insert(sub, r);
    }
    let rev = support::rev("multi");
    hub.commit("org/multi", &rev);
    hub.set_ref("org/multi", &rev);
    let found = scan_cache(&hub.root);
    assert_eq!(
        ids(&found),
        ["org/multi", "org/multi/lora-b", "org/multi/lora-c"]
    );
    for (a, (_, r)) in found.iter().zip(&ranks) {
        assert_eq!(a.revision.as_deref(), Some(rev.as_str()));
        // Each folder's own config: scale = alpha / its own r.
        assert!(
            a.deltas
                .iter()
                .all(|d| d.rank == *r && d.scale == 16.0 / *r as f64),
            "{}",
            a.id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// real gpt-oss-20b shapes (sparse files: headers only)

fn real(pattern: Pattern, r: usize, er: usize, dtype: Dtype) -> Written {
    let mut s = spec(Dims::GPT_OSS_20B, pattern, r, er);
    s.dtype = dtype;
    s.sparse = true;
    write(&s)
}

fn shape_of(a: &Adapter, suffix: &str) -> Vec<usize> {
    a.tensors
        .iter()
        .find(|t| t.info.name.ends_with(suffix))
        .unwrap_or_else(|| panic!("no tensor {suffix}"))
        .info
        .shape
        .clone()
}

#[test]
fn real_shapes_attention_and_router() {
    let w = real(Pattern::Attention, 32, 0, Dtype::F32);
    let a = &w.adapter;
    assert_eq!(a.tensors.len(), 192, "survey: 24 layers × 8 tensors");
    assert_eq!(
        shape_of(a, "layers.0.self_attn.q_proj.lora_B.weight"),
        [4096, 32]
    );
    assert_eq!(
        shape_of(a, "layers.0.self_attn.o_proj.lora_A.weight"),
        [32, 4096]
    );
    let file = fs::metadata(w.path().join("adapter_model.safetensors"))
        .expect("meta")
        .len();
    assert_eq!(a.bytes(), file);
    assert!(
        file > 24 * 663_552 * 4,
        "the data section is all there (sparse)"
    );

    let mut qv = spec(Dims::GPT_OSS_20B, Pattern::Attention, 16, 0);
    qv.targets = vec!["q_proj", "v_proj"];
    qv.sparse = true;
    let a3 = write(&qv);
    assert_eq!(
        a3.adapter.tensors.len(),
        96,
        "survey A3: q/v only, 96 tensors"
    );
    assert_eq!(a3.adapter.attention_rank(), Some(16));

    let b = real(Pattern::AttentionRouter, 8, 0, Dtype::F32);
    assert_eq!(b.adapter.tensors.len(), 240, "survey B: 240 tensors");
    assert_eq!(
        shape_of(&b.adapter, "layers.3.mlp.router.weight"),
        [32, 2880]
    );
    assert_eq!(b.adapter.pattern(), Pat::AttentionRouter);
}

#[test]
fn real_shapes_pattern_c_reports_per_expert_rank() {
    // The survey's "rank 8 + expert rank 256": A of 256 rows at r = 8 over 32 experts.
    let w = real(
        Pattern::PeftExperts {
            layers: vec![7, 15, 23],
        },
        8,
        8,
        Dtype::F32,
    );
    let a = &w.adapter;
    assert_eq!(
        shape_of(a, "layers.7.mlp.experts.base_layer.lora_A.weight"),
        [256, 2880]
    );
    assert_eq!(
        shape_of(a, "layers.7.mlp.experts.base_layer.lora_B.weight"),
        [5760, 256]
    );
    assert_eq!(
        shape_of(a, "layers.7.mlp.experts.lora_B.weight"),
        [2880, 256]
    );
    let s = a.summary();
    assert_eq!(s.expert_rank, Some(8));
    assert_eq!(s.experts, Some(32));
    assert_eq!(s.expert_layers, [7, 15, 23]);
    for l in [7, 15, 23] {
        for t in ["gate_up_proj", "down_proj"] {
            let ds = deltas_of(a, l, t);
            assert_eq!(ds.len(), 32, "layer {l} {t}");
            assert_eq!(ds[31].a.pick, Pick::Rows { start: 248, len: 8 });
            assert_eq!(
                ds[31].b.pick,
                Pick::Cols {
                    start: 31,
                    step: 32,
                    len: 8
                }
            );
        }
    }
    assert_eq!(a.deltas.len(), 24 * 4 + 3 * 2 * 32);
}

#[test]
fn real_shapes_tinker_and_full_weights() {
    let w = real(Pattern::Tinker3d, 32, 32, Dtype::F32);
    let a = &w.adapter;
    assert_eq!(
        shape_of(a, "layers.0.mlp.experts.w1.lora_A.weight"),
        [1, 32, 2880]
    );
    assert_eq!(
        shape_of(a, "layers.0.mlp.experts.w1.lora_B.weight"),
        [32, 2880, 32]
    );
    assert_eq!(
        shape_of(a, "layers.0.mlp.experts.w2.lora_A.weight"),
        [32, 32, 2880]
    );
    assert_eq!(
        shape_of(a, "layers.0.mlp.experts.w2.lora_B.weight"),
        [1, 2880, 32]
    );
    assert_eq!(a.tensors.len(), 24 * 14);
    assert_eq!(a.deltas.len(), 24 * (4 + 3 * 32));
    assert_eq!((a.expert_rank(), a.experts()), (Some(32), Some(32)));

    let e = real(
        Pattern::FullWeights {
            layers: (0..19).collect(),
        },
        0,
        0,
        Dtype::BF16,
    );
    assert_eq!(
        (e.adapter.kind, e.adapter.layer_indices().len()),
        (Kind::FullWeights, 19)
    );
    assert_eq!(e.adapter.dtypes(), strings(&["BF16"]));
}

/// Bytes this process has read through read(2) so far (Linux), if known.
fn bytes_read() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn survey_population_scans_as_the_survey_says() {
    let hub = Hub::new();
    let repos = lorascope::synth::survey::repos();
    assert_eq!(repos.len(), 140);
    lorascope::synth::survey::write_cache(&hub.root, &repos).expect("survey cache");
    let expected = support::survey_adapters(&repos);
    let read_before = bytes_read();
    let found = scan_cache(&hub.root);
    if let (Some(before), Some(after)) = (read_before, bytes_read()) {
        // Headers only: reading the data would be ~19 GB. The counter is per process, so other
        // tests running meanwhile add their own reads (well under 1 GB).
        assert!(
            after - before < 2_000_000_000,
            "scan read {} bytes",
            after - before
        );
    }
    assert_eq!(found.len(), expected);
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &found {
        *by.entry(a.pattern().as_str()).or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = [
        ("attention-only", 93 + 3 + 11),
        ("attention+router", 2),
        ("attention+experts per-expert", 15),
        ("attention+experts shared-3d", 1),
        ("full-weights", 1),
        ("empty", 2),
        ("no-safetensors", 22),
    ]
    .into();
    assert_eq!(by, want);
    let expert_ranks: BTreeSet<_> = found.iter().filter_map(Adapter::expert_rank).collect();
    assert_eq!(expert_ranks, [8, 16, 32, 64].into());
    let bytes: u64 = found.iter().map(Adapter::bytes).sum();
    let safetensors: u64 = support::files_under(&hub.root)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| fs::metadata(hub.root.join(p)).expect("resolves").len())
        .sum();
    assert_eq!(
        bytes, safetensors,
        "every safetensors file counted once, in full"
    );
    assert!(
        (17e9..21e9).contains(&(bytes as f64)),
        "~19 GB like the survey: {bytes}"
    );
}

// ---------------------------------------------------------------------------------------------
// the hub cache: refs/main, snapshots, symlinks, environment

fn set_mtime(p: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    fs::File::open(p)
        .expect("open")
        .set_modified(t)
        .expect("set mtime");
}

/// Writes a toy attention adapter of rank `r` as snapshot `rev` of `id`.
fn snapshot(hub: &Hub, id: &str, rev: &str, r: usize) -> PathBuf {
    synth::write_adapter(&hub.stage(), &spec(Dims::TOY, Pattern::Attention, r, 0)).expect("synth");
    hub.commit(id, rev)
}

#[test]
fn cache_follows_refs_main_else_newest_snapshot() {
    let hub = Hub::new();
    let (old, new) = (support::rev("old"), support::rev("new"));
    // refs/main pins the older snapshot.
    let pinned = snapshot(&hub, "org/pinned", &old, 2);
    set_mtime(&pinned, 1_000_000);
    set_mtime(&snapshot(&hub, "org/pinned", &new, 4), 2_000_000);
    hub.set_ref("org/pinned", &old);
    // No refs/main, or one naming a snapshot that is gone: the newest snapshot.
    for id in ["org/no-ref", "org/stale-ref"] {
        set_mtime(&snapshot(&hub, id, &new, 3), 2_000_000);
        set_mtime(&snapshot(&hub, id, &old, 1), 1_000_000);
    }
    hub.set_ref("org/stale-ref", &support::rev("deleted"));
    // Things a cache also holds that are not model repos.
    fs::create_dir_all(hub.root.join("datasets--org--data/snapshots")).expect("dataset");
    fs::create_dir_all(hub.root.join(".locks/models--org--pinned")).expect("locks");
    fs::write(hub.root.join("version.txt"), "1").expect("version");

    let found = scan_cache(&hub.root);
    // The repo's id is its main revision's adapter; the other revision fetched is listed too,
    // under `id@<commit>` (a run when it is the same adapter: tests/runs.rs).
    let at = |id: &str, rev: &str| format!("{id}@{}", &rev[..7]);
    assert_eq!(
        ids(&found),
        [
            "org/no-ref".to_string(),
            at("org/no-ref", &old),
            "org/pinned".to_string(),
            at("org/pinned", &new),
            "org/stale-ref".to_string(),
            at("org/stale-ref", &old),
        ]
    );
    let got: Vec<_> = found
        .iter()
        .map(|a| (a.revision.clone().expect("revision"), a.attention_rank()))
        .collect();
    assert_eq!(
        got,
        [
            (new.clone(), Some(3)),
            (old.clone(), Some(1)),
            (old.clone(), Some(2)),
            (new.clone(), Some(4)),
            (new.clone(), Some(3)),
            (old.clone(), Some(1)),
        ]
    );
    let a = &found[2];
    assert_eq!(a.path, pinned);
    let st = pinned.join("adapter_model.safetensors");
    let link = fs::read_link(&st).expect("snapshot files are symlinks");
    assert!(
        link.is_relative() && link.starts_with("../../blobs"),
        "{link:?}"
    );
    assert_eq!(a.files[0].path, st);
}

#[test]
fn cache_root_follows_huggingface_hub_order() {
    let full = [
        ("HF_HUB_CACHE", "/a/hub-cache"),
        ("HUGGINGFACE_HUB_CACHE", "/b/legacy"),
        ("HF_HOME", "/c/hf-home"),
        ("XDG_CACHE_HOME", "/d/xdg"),
        ("HOME", "/e/home"),
    ];
    let expect = [
        Some("/a/hub-cache"),
        Some("/b/legacy"),
        Some("/c/hf-home/hub"),
        Some("/d/xdg/huggingface/hub"),
        Some("/e/home/.cache/huggingface/hub"),
        None,
    ];
    // Drop the variables one by one from the front: each time the next one decides.
    for (skip, want) in expect.iter().enumerate() {
        let env: BTreeMap<&str, &str> = full[skip..].iter().copied().collect();
        let got = discovery::cache_root_with(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(
            got.as_deref(),
            want.map(Path::new),
            "without the first {skip}"
        );
    }
    // Empty values count as unset, and `~/` is the home folder.
    let env: BTreeMap<&str, &str> =
        [("HF_HUB_CACHE", ""), ("HF_HOME", "~/hf"), ("HOME", "/h")].into();
    let got = discovery::cache_root_with(|k| env.get(k).map(|v| v.to_string()));
    assert_eq!(got.as_deref(), Some(Path::new("/h/hf/hub")));
}

#[test]
fn binary_resolves_cache_from_flag_then_environment() {
    let (a, b) = (Hub::new(), Hub::new());
    a.add("org/in-a", &spec(Dims::TOY, Pattern::Attention, 2, 0));
    b.add("org/in-b", &spec(Dims::TOY, Pattern::Attention, 2, 0));
    // `Hub` keeps its cache in `<dir>/hub`, so `<dir>` serves as HF_HOME.
    let hf_home = b.dir.path();
    let home = tempfile::tempdir().expect("home");
    let listed = |args: &[&str], env: &[(&str, &Path)]| -> Vec<String> {
        let out = lorascope(args, home.path(), env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|o| o["id"].as_str().expect("id").into())
            .collect()
    };
    let both = [("HF_HUB_CACHE", a.root.as_path()), ("HF_HOME", hf_home)];
    assert_eq!(listed(&["scan", "--json"], &both), ["org/in-a"]);
    assert_eq!(listed(&["scan", "--json"], &both[1..]), ["org/in-b"]);
    let flag = ["scan", "--json", "--cache", b.root.to_str().expect("utf8")];
    assert_eq!(listed(&flag, &both), ["org/in-b"]);
}

// ---------------------------------------------------------------------------------------------
// corrupt files, configs and shapes

/// A safetensors image from a header object and `data` bytes of data section.
fn raw(header: &Value, data: usize) -> Vec<u8> {
    let h = serde_json::to_vec(header).expect("json");
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.resize(out.len() + data, 0);
    out
}

fn with_len(len: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

fn tensor(dtype: &str, shape: &[usize], offs: [usize; 2]) -> Value {
    json!({"dtype": dtype, "shape": shape, "data_offsets": offs})
}

#[test]
fn every_corrupt_file_class_is_an_error_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = synth::safetensors_bytes(
        &synth::generate(&spec(Dims::TOY, Pattern::Attention, 2, 0)).tensors,
        true,
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", valid[..valid.len() / 2].to_vec(), "truncated"),
        ("tiny", b"\x10\0\0".to_vec(), "too short"),
        ("absurd-header", with_len(1 << 50, b"{}"), "absurd"),
        (
            "header-past-end",
            with_len(4096, b"{}"),
            "header says 4096 bytes",
        ),
        ("bad-json", with_len(7, b"{\"a\": ["), "not valid JSON"),
        ("not-an-object", with_len(5, b"[1,2]"), "not a JSON object"),
        (
            "offsets-outside",
            raw(&json!({"w": tensor("F32", &[4], [0, 16])}), 8),
            "ends at byte 16",
        ),
        (
            "hole",
            raw(&json!({"w": tensor("F32", &[4], [8, 24])}), 24),
            "overlap or hole",
        ),
        (
            "shape-size-mismatch",
            raw(&json!({"w": tensor("F32", &[3, 3], [0, 32])}), 32),
            "needs 36 bytes",
        ),
        (
            "trailing-bytes",
            raw(&json!({"w": tensor("F32", &[2], [0, 8])}), 12),
            "file size mismatch",
        ),
        (
            "unknown-dtype",
            raw(&json!({"w": tensor("Q7", &[2], [0, 8])}), 8),
            "unknown dtype 'Q7'",
        ),
        (
            "bad-offsets",
            raw(
                &json!({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}),
                8,
            ),
            "data_offsets",
        ),
    ];
    fs::create_dir_all(dir.path().join("good")).expect("mkdir");
    fs::write(dir.path().join("good/adapter_model.safetensors"), &valid).expect("good");
    for (name, bytes, _) in &cases {
        let d = dir.path().join(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("adapter_model.safetensors"), bytes).expect("write");
    }
    // An interrupted download: the snapshot's symlink points at a blob that is not there.
    let dangling = dir.path().join("dangling");
    fs::create_dir_all(&dangling).expect("mkdir");
    std::os::unix::fs::symlink(
        "../blobs/missing",
        dangling.join("adapter_model.safetensors"),
    )
    .expect("symlink");

    let found = scan_paths(&[dir.path()], LayoutOptions::default());
    assert_eq!(found.len(), cases.len() + 2, "{:?}", ids(&found));
    let by_name: BTreeMap<String, &Adapter> = found
        .iter()
        .map(|a| {
            (
                a.path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                a,
            )
        })
        .collect();
    assert_eq!(by_name["good"].kind, Kind::Lora);
    let dangling = by_name["dangling"];
    assert_eq!(dangling.kind, Kind::Error);
    assert!(dangling
        .error
        .as_deref()
        .is_some_and(|e| e.contains("cannot read")));
    for (name, _, want) in &cases {
        let a = by_name[*name];
        let e = a
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no error"));
        assert_eq!(a.kind, Kind::Error, "{name}");
        assert!(e.contains(want), "{name}: {e:?} should say {want:?}");
        assert!(
            e.contains(&format!("{name}/adapter_model.safetensors")),
            "{name}: names the file"
        );
        assert!(!e.contains('\n'), "one line");
    }
}

#[test]
fn damaged_headers_never_panic() {
    // Byte flips, digit swaps and truncations of a valid file: each must read or fail cleanly.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = spec(Dims::TOY, Pattern::PeftExperts { layers: vec![1] }, 2, 1);
    s.targets = vec!["q_proj"];
    let valid = synth::safetensors_bytes(&synth::generate(&s).tensors, true);
    let hlen = u64::from_le_bytes(valid[..8].try_into().expect("8")) as usize;
    let path = dir.path().join("adapter_model.safetensors");
    let mut rng = synth::Rng::new(7);
    let (mut ok, mut failed) = (0, 0);
    for i in 0..1500 {
        let mut b = valid.clone();
        let at = 8 + rng.next_u64() as usize % hlen;
        match i % 3 {
            0 => b[at] = rng.next_u64() as u8,
            1 if b[at].is_ascii_digit() => b[at] = b'0' + (rng.next_u64() % 10) as u8,
            1 => b[rng.next_u64() as usize % 8] ^= 1 << (rng.next_u64() % 8),
            _ => b.truncate(rng.next_u64() as usize % b.len()),
        }
        fs::write(&path, &b).expect("write");
        let a = only(scan_paths(&[&path], LayoutOptions::default()));
        if a.kind == Kind::Error {
            failed += 1;
        } else {
            ok += 1;
        }
    }
    assert!(
        failed > 500 && ok > 0,
        "mutations should mostly fail: {failed} failed, {ok} ok"
    );
}

#[test]
fn parse_header_rejects_a_file_smaller_than_its_header() {
    let e = format::parse_header(Path::new("x.safetensors"), b"{}", 4);
    assert!(e.is_err());
}

fn write_config(dir: &Path, text: &str) {
    fs::write(dir.join("adapter_config.json"), text).expect("config");
}

#[test]
fn missing_or_malformed_config_still_lists_the_adapter() {
    let w = write(&spec(Dims::TOY, Pattern::Attention, 4, 0));
    let cases = [
        (None, "no adapter_config.json"),
        (Some("{ r: 8"), "malformed"),
        (
            Some(r#"{"r": "eight", "lora_alpha": 16}"#),
            "r is \"eight\"",
        ),
        (Some(r#"{"r": 4, "rank_pattern": [1]}"#), "rank_pattern"),
    ];
    for (text, note) in cases {
        match text {
            None => fs::remove_file(w.path().join("adapter_config.json")).expect("rm"),
            Some(t) => write_config(&w.path(), t),
        }
        let a = w.reload(LayoutOptions::default());
        assert_eq!((a.kind, a.error.as_deref()), (Kind::Lora, None), "{note}");
        assert!(
            a.notes.iter().any(|n| n.contains(note)),
            "{note}: {:?}",
            a.notes
        );
        assert!(
            a.notes.iter().any(|n| n.contains("scale unknown")),
            "{note}"
        );
        assert!(
            a.deltas.iter().all(|d| d.rank == 4 && d.scale == 1.0),
            "ranks from shapes, s = 1"
        );
        assert_eq!(a.base_model(), None);
    }
    // Fields left out take PEFT's defaults (r = 8, lora_alpha = 8), and the note says so.
    write_config(&w.path(), r#"{"peft_type": "LORA"}"#);
    let a = w.reload(LayoutOptions::default());
    assert!(
        a.notes.iter().any(|n| n.contains("no r, lora_alpha")),
        "{:?}",
        a.notes
    );
    assert!(a.deltas.iter().all(|d| d.scale == 8.0 / 4.0));
}

#[test]
fn unreadable_folder_is_an_error_the_scan_goes_past() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = spec(Dims::TOY, Pattern::Attention, 2, 0);
    synth::write_adapter(&dir.path().join("a-ok"), &s).expect("synth");
    let locked = dir.path().join("b-locked");
    synth::write_adapter(&locked, &s).expect("synth");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
    let enforced = fs::read_dir(&locked).is_err(); // root reads through mode 000
    let found = scan_paths(&[dir.path()], LayoutOptions::default());
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");
    assert_eq!(found[0].kind, Kind::Lora);
    if enforced {
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].kind, Kind::Error);
        assert!(found[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cannot read folder")));
    } else {
        eprintln!("running as root: mode 000 does not stop reads, assertion skipped");
    }
}

/// Tensors as (name, shape).
type Named<'a> = Vec<(&'a str, Vec<usize>)>;

/// Writes tensors (name, shape) of holes as one adapter file with `config`, and loads it.
fn load_shapes(tensors: &[(&str, Vec<usize>)], config: &str) -> Adapter {
    let dir = tempfile::tempdir().expect("tempdir");
    let t: Vec<TensorData> = tensors
        .iter()
        .map(|(n, s)| TensorData {
            name: n.to_string(),
            dtype: Dtype::F32,
            shape: s.clone(),
            bytes: None,
        })
        .collect();
    synth::write_safetensors(&dir.path().join("adapter_model.safetensors"), &t, true)
        .expect("write");
    write_config(dir.path(), config);
    only(scan_paths(&[dir.path()], LayoutOptions::default()))
}

/// Issue 23: a module whose factors do not make a delta leaves that module unread (its tensors
/// `unknown`, named in `incomplete` with the reason), never the whole adapter an error.
#[test]
fn inconsistent_lora_shapes_leave_the_module_unknown_not_the_adapter_an_error() {
    let q = "base_model.model.model.layers.0.self_attn.q_proj";
    let ex = "base_model.model.model.layers.0.mlp.experts";
    let (a, b) = (format!("{q}.lora_A.weight"), format!("{q}.lora_B.weight"));
    let (ea, eb) = (format!("{ex}.lora_A.weight"), format!("{ex}.lora_B.weight"));
    let (a, b, ea, eb) = (a.as_str(), b.as_str(), ea.as_str(), eb.as_str());
    let cfg = r#"{"r": 4, "lora_alpha": 8}"#;
    let cases: Vec<(Named, &str)> = vec![
        (
            vec![(a, vec![4, 12]), (b, vec![16, 3])],
            "lora_A has 4 rows but lora_B has 3 columns",
        ),
        (vec![(a, vec![4, 12])], "lora_A without lora_B"),
        (vec![(b, vec![16, 4])], "lora_B without lora_A"),
        (
            vec![(a, vec![4, 12]), (b, vec![2, 16, 4])],
            "expected both 2D or both 3D",
        ),
        (
            vec![(a, vec![2, 4, 12]), (b, vec![3, 16, 4])],
            "do not broadcast",
        ),
        (
            vec![(a, vec![1, 4, 12]), (b, vec![1, 16, 3])],
            "rank 4 but lora_B has rank 3",
        ),
        (
            vec![(ea, vec![6, 12]), (eb, vec![16, 6])],
            "not a multiple of the per-expert rank 4",
        ),
    ];
    for (tensors, want) in cases {
        let ad = load_shapes(&tensors, cfg);
        assert_eq!((ad.kind, &ad.error), (Kind::Lora, &None), "{want}");
        assert!(ad.deltas.is_empty());
        assert_eq!(ad.incomplete.len(), 1, "{want}");
        let why = ad.incomplete[0].why();
        assert!(why.contains(want), "{why}");
        assert_eq!(ad.unrecognised(), tensors.len(), "{want}");
        assert!(
            ad.tensors.iter().all(|t| t.name.role == Role::Unknown
                && t.name.unknown.as_deref() == Some(&format!("incomplete LoRA pair: {why}"))),
            "{want}"
        );
    }
    // The same tensors with consistent shapes load.
    let ok = load_shapes(&[(a, vec![4, 12]), (b, vec![16, 4])], cfg);
    assert_eq!((ok.kind, ok.deltas.len()), (Kind::Lora, 1));
}

// ---------------------------------------------------------------------------------------------
// CLI contract, through the real binary

/// A cache with one repo of every layout (toy sizes) plus a corrupt one.
fn every_layout_hub() -> Hub {
    let hub = Hub::new();
    let mut qv = spec(Dims::TOY, Pattern::Attention, 2, 0);
    qv.targets = vec!["q_proj", "v_proj"];
    hub.add("org/attn", &spec(Dims::TOY, Pattern::Attention, 4, 0));
    hub.add("org/qv", &qv);
    hub.add(
        "org/router",
        &spec(Dims::TOY, Pattern::AttentionRouter, 2, 0),
    );
    hub.add(
        "org/moe",
        &spec(
            TOY24,
            Pattern::PeftExperts {
                layers: vec![7, 15, 23],
            },
            4,
            2,
        ),
    );
    hub.add("org/tinker", &spec(Dims::TOY, Pattern::Tinker3d, 2, 2));
    hub.add(
        "org/merged",
        &spec(Dims::TOY, Pattern::FullWeights { layers: vec![1] }, 0, 0),
    );
    hub.add("org/empty", &spec(Dims::TOY, Pattern::Empty, 2, 0));
    let stage = hub.stage();
    for sub in ["", "second"] {
        synth::write_adapter(&stage.join(sub), &qv).expect("synth");
    }
    let rv = support::rev("org/multi");
    hub.commit("org/multi", &rv);
    hub.set_ref("org/multi", &rv);
    hub.add_files(
        "org/bin-only",
        &[("adapter_config.json", b"{}"), ("adapter_model.bin", b"PK")],
    );
    let valid = synth::safetensors_bytes(&synth::generate(&qv).tensors, true);
    hub.add_files(
        "org/broken",
        &[
            ("adapter_model.safetensors", &valid[..valid.len() - 3]),
            ("adapter_config.json", b"{}"),
        ],
    );
    hub
}

fn run_ok(args: &[&str], home: &Path) -> Vec<u8> {
    let out = lorascope(args, home, &[]);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a command that must fail; returns its one stderr line.
fn run_fail(args: &[&str], home: &Path) -> (String, Vec<u8>) {
    let out = lorascope(args, home, &[]);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err:?}"
    );
    (err, out.stdout)
}

fn is_count(v: &Value) -> bool {
    v.is_u64()
}
fn is_str_or_null(v: &Value) -> bool {
    v.is_string() || v.is_null()
}
fn is_count_or_null(v: &Value) -> bool {
    v.is_u64() || v.is_null()
}
fn is_sorted<T: PartialOrd>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}
fn is_strings(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}
fn is_sorted_strings(v: &Value) -> bool {
    is_strings(v)
        && is_sorted(
            &v.as_array()
                .expect("array")
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        )
}
fn is_sorted_counts(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().all(Value::is_u64) && is_sorted(&a.iter().map(Value::as_u64).collect::<Vec<_>>())
    })
}
fn is_kind(v: &Value) -> bool {
    ["lora", "full-weights", "empty", "no-safetensors", "error"].contains(&v.as_str().unwrap_or(""))
}
fn is_expert_layout(v: &Value) -> bool {
    v.is_null() || v == "per-expert" || v == "shared-3d"
}

type FieldCheck = (&'static str, fn(&Value) -> bool);

/// The fields the issue requires of every `scan --json` object, with their types.
const SCAN_FIELDS: [FieldCheck; 16] = [
    ("id", Value::is_string),
    ("path", Value::is_string),
    ("revision", is_str_or_null),
    ("kind", is_kind),
    ("error", is_str_or_null),
    ("files", is_count),
    ("tensors", is_count),
    ("bytes", is_count),
    ("dtypes", is_strings),
    ("targets", is_sorted_strings),
    ("attention_rank", is_count_or_null),
    ("expert_rank", is_count_or_null),
    ("expert_layers", is_sorted_counts),
    ("expert_layout", is_expert_layout),
    ("layers", is_count),
    ("base_model", is_str_or_null),
];

#[test]
fn scan_json_has_the_contract_fields() {
    let hub = every_layout_hub();
    let home = tempfile::tempdir().expect("home");
    let root = hub.root.to_str().expect("utf8");
    let out: Value =
        serde_json::from_slice(&run_ok(&["scan", "--cache", root, "--json"], home.path()))
            .expect("json");
    let arr = out.as_array().expect("an array");
    for o in arr {
        for (field, ok) in SCAN_FIELDS {
            let v = o
                .get(field)
                .unwrap_or_else(|| panic!("{} lacks {field}", o["id"]));
            assert!(ok(v), "{}: {field} = {v}", o["id"]);
        }
        assert_eq!(o["error"].is_string(), o["kind"] == "error", "{}", o["id"]);
    }
    let by_id: BTreeMap<&str, &Value> = arr
        .iter()
        .map(|o| (o["id"].as_str().expect("id"), o))
        .collect();
    let want_ids = [
        "org/attn",
        "org/bin-only",
        "org/broken",
        "org/empty",
        "org/merged",
        "org/moe",
        "org/multi",
        "org/multi/second",
        "org/qv",
        "org/router",
        "org/tinker",
    ];
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), want_ids);
    let moe = by_id["org/moe"];
    assert_eq!(moe["revision"], support::rev("org/moe"));
    assert_eq!(
        (
            &moe["expert_layout"],
            &moe["expert_rank"],
            &moe["attention_rank"],
            &moe["expert_layers"],
            &moe["layers"]
        ),
        (
            &json!("per-expert"),
            &json!(2),
            &json!(4),
            &json!([7, 15, 23]),
            &json!(24)
        )
    );
    assert_eq!(by_id["org/tinker"]["expert_layout"], "shared-3d");
    assert_eq!(
        by_id["org/attn"]["targets"],
        json!(["k_proj", "o_proj", "q_proj", "v_proj"])
    );
    assert_eq!(by_id["org/attn"]["dtypes"], json!(["F32"]));
    assert_eq!(by_id["org/attn"]["base_model"], "openai/gpt-oss-20b");
    assert_eq!(by_id["org/attn"]["tensors"], 24);
    let kinds: Vec<_> = [
        "org/merged",
        "org/empty",
        "org/bin-only",
        "org/broken",
        "org/router",
    ]
    .iter()
    .map(|i| by_id[i]["kind"].as_str().expect("kind"))
    .collect();
    assert_eq!(
        kinds,
        ["full-weights", "empty", "no-safetensors", "error", "lora"]
    );
    // The binary prints exactly the library's summaries.
    let lib: Vec<_> = scan_cache(&hub.root).iter().map(Adapter::summary).collect();
    assert_eq!(out, serde_json::to_value(lib).expect("json"));
}

#[test]
fn inspect_json_structure_and_exit_codes() {
    let hub = every_layout_hub();
    let home = tempfile::tempdir().expect("home");
    let root = hub.root.to_str().expect("utf8");
    let lib = scan_cache(&hub.root);
    let moe = lib.iter().find(|a| a.id == "org/moe").expect("moe");

    let v: Value = serde_json::from_slice(&run_ok(
        &["inspect", "org/moe", "--cache", root, "--json"],
        home.path(),
    ))
    .expect("json");
    for k in ["id", "path", "kind", "error", "tensors", "deltas"] {
        assert!(v.get(k).is_some(), "inspect --json lacks {k}");
    }
    assert_eq!(
        (&v["id"], &v["kind"], &v["error"]),
        (&json!("org/moe"), &json!("lora"), &Value::Null)
    );
    assert_eq!(v["path"], moe.path.display().to_string());
    let tensors = v["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), moe.tensors.len());
    for t in tensors {
        assert!(
            t["name"].is_string() && t["dtype"].is_string() && t["role"].is_string(),
            "{t}"
        );
        assert!(
            t["bytes"].is_u64()
                && t["shape"]
                    .as_array()
                    .is_some_and(|s| s.iter().all(Value::is_u64)),
            "{t}"
        );
    }
    let deltas = v["deltas"].as_array().expect("deltas");
    assert_eq!(deltas.len(), moe.deltas.len());
    for d in deltas {
        assert!(
            d["target"].is_string() && d["rank"].is_u64() && d["scale"].is_f64(),
            "{d}"
        );
        assert!(
            is_count_or_null(&d["layer"]) && is_count_or_null(&d["expert"]),
            "{d}"
        );
    }
    let d = deltas
        .iter()
        .find(|d| d["layer"] == 15 && d["target"] == "down_proj" && d["expert"] == 3)
        .expect("layer 15 down_proj expert 3");
    assert_eq!(
        d["a"]["pick"],
        json!({"kind": "rows", "start": 6, "len": 2})
    );
    assert_eq!(
        d["b"]["pick"],
        json!({"kind": "cols", "start": 3, "step": 4, "len": 2})
    );

    // Human output and lookups by path succeed.
    let text = String::from_utf8(run_ok(
        &["inspect", "org/moe", "--cache", root],
        home.path(),
    ))
    .expect("utf8");
    let heading = format!("Deltas ({})", moe.deltas.len());
    assert!(
        text.contains("layer 15") && text.contains(&heading),
        "{text}"
    );
    let snap = moe.path.to_str().expect("utf8");
    run_ok(&["inspect", snap, "--json"], home.path());
    let table = String::from_utf8(run_ok(&["scan", "--cache", root], home.path())).expect("utf8");
    assert!(
        table.contains("org/multi/second") && table.contains("errors:"),
        "{table}"
    );

    // Unknown id: non-zero, one line, with the closest ids.
    let (err, out) = run_fail(&["inspect", "org/mo", "--cache", root], home.path());
    assert!(out.is_empty());
    assert!(
        err.contains("no adapter 'org/mo'")
            && err.contains("did you mean")
            && err.contains("org/moe"),
        "{err}"
    );
    // A corrupt adapter: non-zero, one line saying what is wrong; --json still describes it.
    let (err, out) = run_fail(
        &["inspect", "org/broken", "--cache", root, "--json"],
        home.path(),
    );
    assert!(
        err.contains("org/broken") && err.contains("truncated"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out).expect("json on stdout");
    assert_eq!(v["kind"], "error");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("truncated")));
    // demo refuses a folder that is not a demo cache.
    let (err, _) = run_fail(&["demo", root], home.path());
    assert!(err.contains("refusing"), "{err}");
}

#[test]
fn the_cache_is_never_modified() {
    let hub = every_layout_hub();
    let home = tempfile::tempdir().expect("home");
    let root = hub.root.to_str().expect("utf8");
    let before = fingerprint(&hub.root);
    assert!(before.len() > 40, "the fixture has files to watch");
    run_ok(&["scan", "--cache", root], home.path());
    run_ok(&["scan", "--cache", root, "--json", root], home.path());
    run_ok(&["--cache", root], home.path());
    let ids: Vec<String> = scan_cache(&hub.root).into_iter().map(|a| a.id).collect();
    for id in &ids {
        for json in [true, false] {
            let mut args = vec![
                "inspect",
                id,
                "--cache",
                root,
                "--lora-b-layout",
                "expert-major",
            ];
            if json {
                args.push("--json");
            }
            let _ = lorascope(&args, home.path(), &[]);
        }
    }
    let _ = lorascope(&["inspect", "org/nope", "--cache", root], home.path(), &[]);
    for layout in [LoraBLayout::StrideE, LoraBLayout::ExpertMajor] {
        scan_paths(
            &[&hub.root],
            LayoutOptions {
                lora_b_layout: layout,
                ..Default::default()
            },
        );
    }
    assert_eq!(fingerprint(&hub.root), before);
    assert!(
        fs::read_dir(home.path()).expect("home").next().is_none(),
        "nothing written to HOME"
    );
}

#[test]
fn demo_writes_a_complete_cache_of_every_layout() {
    let home = tempfile::tempdir().expect("home");
    // Where `lorascope` without a subcommand looks for the demo, so that path is tested too.
    let dir = home.path().join(".cache/lorascope/demo-hub");
    let d = dir.to_str().expect("utf8");
    let out = String::from_utf8(run_ok(&["demo", d], home.path())).expect("utf8");
    assert!(out.contains("wrote 18 demo repos"), "{out}");
    // ~148 MB of adapters at real gpt-oss-20b shapes, plus the small base model (≤ 60 MB) with
    // its adapter and merge.
    let size = support::apparent_size(&dir);
    assert!(size <= 180_000_000, "demo is {size} bytes");
    let base = support::apparent_size(&dir.join("models--lorascope-demo--gpt-oss-mini"));
    assert!(base <= 60_000_000, "the demo base is {base} bytes");

    // The hub layout: refs/main names the snapshot; snapshot files are relative links to blobs.
    let repos: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("demo dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(repos.len(), 18);
    for repo in &repos {
        let rev = fs::read_to_string(repo.join("refs/main")).expect("refs/main");
        let snap = repo.join("snapshots").join(rev.trim());
        for rel in support::files_under(&snap) {
            let link = fs::read_link(snap.join(&rel)).expect("a symlink");
            assert!(link.is_relative(), "{link:?}");
            let blob = fs::canonicalize(snap.join(&rel)).expect("resolves");
            assert!(blob.starts_with(fs::canonicalize(repo.join("blobs")).expect("blobs")));
        }
    }

    let before = fingerprint(&dir);
    let v: Value = serde_json::from_slice(&run_ok(&["scan", "--cache", d, "--json"], home.path()))
        .expect("json");
    let arr = v.as_array().expect("array");
    let patterns: BTreeSet<&str> = arr
        .iter()
        .map(|o| o["pattern"].as_str().expect("pattern"))
        .collect();
    let want: BTreeSet<&str> = [
        "attention-only",
        "attention+router",
        "attention+experts per-expert",
        "attention+experts shared-3d",
        "attention+experts per-expert (module list)",
        "full-weights",
        "base model",
        "empty",
        "no-safetensors",
        "error",
    ]
    .into();
    assert_eq!(patterns, want);
    // The Unsloth module list and the mlx-lm adapter are read as such, every tensor understood.
    let by_id = |id: &str| {
        arr.iter()
            .find(|o| o["id"] == format!("lorascope-demo/{id}"))
            .unwrap_or_else(|| panic!("{id}"))
    };
    let unsloth = by_id("gpt-oss-20b-unsloth-experts");
    assert_eq!(
        (
            &unsloth["format"],
            &unsloth["experts"],
            &unsloth["expert_layers"]
        ),
        (&json!("unsloth"), &json!(32), &json!([15]))
    );
    let mlx = by_id("gpt-oss-20b-mlx");
    assert_eq!(
        (
            &mlx["format"],
            &mlx["kind"],
            &mlx["experts"],
            &mlx["expert_layers"]
        ),
        (&json!("mlx"), &json!("lora"), &json!(32), &json!([23]))
    );
    // The GGUF twin of the attention adapter (llama.cpp's layout, Q8_0).
    let gguf = by_id("gpt-oss-20b-qv-r8-gguf/gpt-oss-20b-qv-r8-q8_0.gguf");
    assert_eq!(
        (&gguf["format"], &gguf["kind"], &gguf["deltas"]),
        (&json!("gguf"), &json!("lora"), &json!(48))
    );
    assert!(arr.iter().all(|o| o["unrecognised"] == 0), "{arr:?}");
    assert!(
        arr.iter().any(|o| o["id"]
            .as_str()
            .is_some_and(|i| i.matches('/').count() == 2)),
        "a sub-adapter"
    );
    let adapters = scan_cache(&dir);
    let moe = adapters
        .iter()
        .find(|a| a.pattern() == Pat::ExpertsPerExpert)
        .expect("pattern C");
    assert_eq!(moe.experts(), Some(32), "real gpt-oss shapes");
    assert!(adapters
        .iter()
        .flat_map(|a| &a.deltas)
        .any(|d| (d.out_dim, d.in_dim) == (4096, 2880)));
    run_ok(&["inspect", &moe.id, "--cache", d], home.path());
    // With an empty hub cache, `lorascope` shows the demo (written once, not again) and
    // `inspect` finds demo ids.
    let empty = home.path().join("empty-hub");
    fs::create_dir_all(&empty).expect("empty hub");
    let e = empty.to_str().expect("utf8");
    let out = lorascope(&["--cache", e], home.path(), &[]);
    assert!(out.status.success());
    let (table, note) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(table.contains(&moe.id), "{table}");
    assert!(note.contains("showing the demo cache"), "{note}");
    run_ok(
        &["inspect", "lorascope-demo/gpt-oss-20b-qv-r8", "--cache", e],
        home.path(),
    );
    assert_eq!(fingerprint(&dir), before, "scanning the demo wrote nothing");
    assert!(fs::read_dir(&empty).expect("empty").next().is_none());
    // Writing the demo again over a complete one is fine.
    run_ok(&["demo", d], home.path());
}

/// The scan reads headers with several readers; what it returns does not depend on how many,
/// and `load_each` hands adapters on in the walk's order whatever order the readers finish in.
#[test]
fn parallel_and_serial_scans_give_identical_adapters_in_walk_order() {
    let hub = Hub::new();
    let patterns = [
        Pattern::Attention,
        Pattern::PeftExperts { layers: vec![1] },
        Pattern::Tinker3d,
        Pattern::AttentionRouter,
        Pattern::Empty,
    ];
    for i in 0..15 {
        let s = spec(Dims::TOY, patterns[i % patterns.len()].clone(), 2, 2);
        let mut items = vec![synth::Item::Adapter {
            sub: String::new(),
            spec: s.clone(),
        }];
        if i % 4 == 0 {
            // Repos with adapters in subfolders, and one with no safetensors at all.
            items.push(synth::Item::Adapter {
                sub: "checkpoint-2".into(),
                spec: s,
            });
        }
        if i == 7 {
            items = vec![synth::Item::Raw {
                name: "pytorch_model.bin".into(),
                bytes: vec![0; 8],
            }];
        }
        synth::write_hub_repo(&hub.root, &format!("org{}/m{i:02}", i % 3), &items).unwrap();
    }
    let req = ScanRequest {
        cache: Some(hub.root.clone()),
        ..Default::default()
    };
    let src = discovery::sources(&req);
    assert!(src.len() > 15, "{}", src.len());
    let serial = discovery::load_all_with(&src, LayoutOptions::default(), 1);
    let want: Vec<String> = src.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids(&serial), want);
    let debug = |v: &[Adapter]| format!("{v:#?}");
    for threads in [2, 3, 8] {
        let parallel = discovery::load_all_with(&src, LayoutOptions::default(), threads);
        assert_eq!(debug(&parallel), debug(&serial), "{threads} readers");
        // Handed on in order, one at a time.
        let mut order = vec![];
        discovery::load_each(&src, LayoutOptions::default(), threads, |a| {
            order.push(a.id)
        });
        assert_eq!(order, want, "{threads} readers");
    }
    assert_eq!(debug(&scan_cache(&hub.root)), debug(&serial));
    // The sources themselves (walked per repo in parallel) come out the same every time.
    for _ in 0..3 {
        assert_eq!(
            format!("{:?}", discovery::sources(&req)),
            format!("{src:?}")
        );
    }
}

/// A hub cache with a full model `org/base`, a LoRA adapter whose config names it, a merge whose
/// model card names it, and an unrelated full model.
fn cache_with_a_base(root: &Path) {
    use lorascope::synth::base::{write_base, write_merged, BaseSpec, ExpertStorage, Merge};
    let dims = Dims::TOY_MXFP4;
    let base = BaseSpec::new(dims, ExpertStorage::Mxfp4);
    write_base(root, "Org/Base", &base).unwrap();
    write_base(root, "org/other-model", &base).unwrap();
    let mut lora = Spec::new(dims, Pattern::Attention);
    lora.base_model = "org/base".into();
    synth::write_hub_repo(
        root,
        "me/lora",
        &[synth::Item::Adapter {
            sub: String::new(),
            spec: lora,
        }],
    )
    .unwrap();
    let merge = Merge {
        layers: vec![1],
        experts: vec![0],
        rank: 2,
        relative: 0.1,
        seed: 3,
        storage: ExpertStorage::Bf16,
        base_model: "org/base".into(),
    };
    write_merged(root, "me/merged", &base, &merge).unwrap();
}

/// A full model that adapters of the list name (by config or model card, ids compared as the
/// Hub does, case-insensitively) is a `base model` row with its count, in `scan --json`, the
/// scan table and the report; other full models stay `full-weights`.
#[test]
fn a_full_model_that_adapters_name_is_a_base_model_row() {
    let home = tempfile::tempdir().expect("home");
    let root = home.path().join("hub");
    cache_with_a_base(&root);
    let d = root.to_str().expect("utf8");
    let v: Value = serde_json::from_slice(&run_ok(&["scan", "--cache", d, "--json"], home.path()))
        .expect("json");
    let row = |id: &str| {
        v.as_array()
            .expect("array")
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {v}"))
            .clone()
    };
    let base = row("Org/Base");
    assert_eq!(
        (&base["kind"], &base["pattern"], &base["base_of"]),
        (&json!("full-weights"), &json!("base model"), &json!(2))
    );
    let merged = row("me/merged");
    assert_eq!(
        (
            &merged["pattern"],
            &merged["base_model"],
            &merged["base_of"]
        ),
        (&json!("full-weights"), &json!("org/base"), &json!(0))
    );
    assert_eq!(row("org/other-model")["pattern"], "full-weights");
    assert_eq!(row("me/lora")["base_of"], 0);
    let table = String::from_utf8(run_ok(&["scan", "--cache", d], home.path())).expect("utf8");
    let line = table
        .lines()
        .find(|l| l.starts_with("Org/Base"))
        .expect("base row");
    assert!(line.contains("base model (2)"), "{table}");

    // The report counts it apart from the full weights, and every adapter in one pattern row.
    let adapters = discovery::scan(&ScanRequest {
        cache: Some(root.clone()),
        ..Default::default()
    });
    let r = lorascope::report::build(&adapters, None);
    assert_eq!(
        (r.overview.full_weights, r.overview.base_models_present),
        (2, 1)
    );
    let rows: BTreeMap<&str, usize> = r
        .patterns
        .iter()
        .map(|p| (p.pattern.as_str(), p.adapters))
        .collect();
    assert_eq!(rows["base model"], 1);
    assert_eq!(rows["full-weights"], 2);
    assert_eq!(
        rows.iter()
            .filter(|(p, _)| **p != lorascope::report::MULTI)
            .map(|(_, n)| n)
            .sum::<usize>(),
        r.overview.adapters
    );
}
