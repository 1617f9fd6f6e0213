//! torchtune's own names (issue 25): `LoRALinear`'s `lora_a.weight` / `lora_b.weight` and
//! `LoRAGroupedExperts`' `lora_{gate,up,down}_{a,b}` (E, in, r) / (E, r, out), read as the same
//! deltas as the PEFT/Tinker adapter they mirror: statistics against a dense f64 reference and
//! the planted spectra, `compare` against the source, real gpt-oss shapes from the header, the
//! scale with and without torchtune's adapter_config.json, and `.pt` checkpoints named.

mod support;

use faer::Mat;
use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::layout::{Delta, ExpertLayout, Format, LayoutOptions, Pick};
use lorascope::adapter::{Adapter, Kind};
use lorascope::compute::compare;
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use std::path::Path;

fn load_one(path: &Path) -> Adapter {
    let src = discovery::discover_path(path);
    assert_eq!(src.len(), 1, "{path:?}: {src:?}");
    Adapter::load(&src[0], LayoutOptions::default())
}

fn toy(pattern: Pattern, dtype: Dtype) -> Spec {
    let mut s = Spec::new(Dims::TOY, pattern);
    s.attn_rank = 4;
    s.expert_rank = 3;
    s.alpha = 12.0;
    s.dtype = dtype;
    s
}

/// ΔW = s·B·A from the factors as the file stores them (the tests' own reader).
fn dense(a: &Adapter, d: &Delta) -> Mat<f64> {
    let (ar, ac, av) = support::read_factor(a, d.a);
    let (br, bc, bv) = support::read_factor(a, d.b);
    assert_eq!((ar, ac, br, bc), (d.rank, d.in_dim, d.out_dim, d.rank));
    let am = Mat::from_fn(ar, ac, |i, j| av[i * ac + j]);
    let bm = Mat::from_fn(br, bc, |i, j| bv[i * bc + j]);
    (&bm * &am) * faer::Scale(d.scale)
}

#[test]
fn statistics_match_dense_and_planted_spectra_attention_and_grouped_experts() {
    for pattern in [Pattern::Attention, Pattern::Tinker3d] {
        for dtype in [Dtype::F32, Dtype::BF16] {
            let t = tempfile::tempdir().unwrap();
            let sp = toy(pattern.clone(), dtype);
            let g = synth::torchtune::write_adapter(t.path(), &sp).unwrap();
            let a = load_one(t.path());
            assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
            assert_eq!(a.format(), Some(Format::Torchtune));
            assert_eq!(a.unrecognised(), 0, "{:?}", a.notes);
            assert_eq!(a.deltas.len(), g.planted.len());
            let experts = pattern == Pattern::Tinker3d;
            if experts {
                assert_eq!(a.experts(), Some(Dims::TOY.experts));
                assert_eq!(a.expert_layout(), Some(ExpertLayout::Shared3d));
            }
            let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
            for s in &st.deltas {
                let d = &a.deltas[s.index];
                let r = if let Some(index) = d.expert {
                    assert_eq!(d.a.pick, Pick::IndexTransposed { index });
                    sp.expert_rank
                } else {
                    assert_eq!((d.a.pick, d.b.pick), (Pick::All, Pick::All));
                    sp.attn_rank
                };
                assert_eq!(d.rank, r);
                // torchtune: (alpha / rank)·B·A, alpha and r from its adapter_config.json.
                assert_eq!(d.scale, sp.alpha / r as f64);
                let mut sig = dense(&a, d).singular_values().unwrap();
                sig.sort_by(|x, y| y.total_cmp(x));
                let planted = g
                    .planted
                    .iter()
                    .find(|p| {
                        Some(p.layer) == d.layer
                            && p.target == d.target.as_str()
                            && p.expert == d.expert
                    })
                    .unwrap_or_else(|| panic!("{:?} planted", s.key()));
                // bf16 rounds the factors: the planted spectrum holds to its precision.
                let tol_planted = if dtype == Dtype::BF16 { 2e-2 } else { 1e-5 };
                for (k, x) in s.singular_values.iter().enumerate() {
                    assert!(
                        (x - sig[k]).abs() <= 1e-9 * sig[0],
                        "{:?} σ{k}: {x} vs dense {}",
                        s.key(),
                        sig[k]
                    );
                    let want = planted.sigma[k] * d.scale;
                    assert!(
                        (x - want).abs() <= tol_planted * planted.sigma[0] * d.scale,
                        "{:?} σ{k}: {x} vs planted {want}",
                        s.key()
                    );
                }
            }
        }
    }
}

#[test]
fn compare_with_the_adapter_it_mirrors_matches_every_delta() {
    let t = tempfile::tempdir().unwrap();
    let sp = toy(Pattern::Tinker3d, Dtype::F32);
    synth::write_adapter(&t.path().join("tinker"), &sp).unwrap();
    synth::torchtune::write_adapter(&t.path().join("tune"), &sp).unwrap();
    let (tt, src) = (
        load_one(&t.path().join("tune")),
        load_one(&t.path().join("tinker")),
    );
    assert_eq!(src.format(), Some(Format::Tinker));
    let c = compare::compare(&tt, &src, &Control::default()).unwrap();
    assert!(
        c.only_a.is_empty() && c.only_b.is_empty(),
        "{:?} {:?}",
        c.only_a,
        c.only_b
    );
    assert_eq!(c.pairs.len(), src.deltas.len());
    for p in &c.pairs {
        let cos = p.cosine.unwrap();
        assert!(
            (1.0 - cos).abs() <= 1e-12,
            "{:?} {:?}: cosine {cos}",
            p.layer,
            p.target
        );
        let (na, nb) = (p.fro_norm_a.unwrap(), p.fro_norm_b.unwrap());
        assert!((na - nb).abs() <= 1e-12 * nb, "‖ΔW‖ {na} vs {nb}");
    }
}

#[test]
fn real_gpt_oss_shapes_are_read_from_the_header() {
    let t = tempfile::tempdir().unwrap();
    let mut sp = Spec::new(Dims::GPT_OSS_20B, Pattern::Tinker3d);
    sp.sparse = true;
    sp.attn_rank = 16;
    sp.expert_rank = 16;
    synth::torchtune::write_adapter(t.path(), &sp).unwrap();
    let a = load_one(t.path());
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.format(), Some(Format::Torchtune));
    assert_eq!(a.deltas.len(), 24 * (4 + 3 * 32));
    let find = |t: &str| a.deltas.iter().find(|d| d.target.as_str() == t).unwrap();
    assert_eq!(
        (find("o_proj").out_dim, find("o_proj").in_dim),
        (2880, 4096)
    );
    let gate = find("gate_proj");
    assert_eq!((gate.out_dim, gate.in_dim, gate.rank), (2880, 2880, 16));
    assert_eq!(a.expert_layers(), (0..24).collect::<Vec<_>>());
}

#[test]
fn without_a_config_the_scale_is_unknown_as_for_other_layouts() {
    let t = tempfile::tempdir().unwrap();
    synth::torchtune::write_adapter(t.path(), &toy(Pattern::Attention, Dtype::F32)).unwrap();
    std::fs::remove_file(t.path().join("adapter_config.json")).unwrap();
    let a = load_one(t.path());
    assert_eq!(a.format(), Some(Format::Torchtune));
    assert!(a.deltas.iter().all(|d| d.scale == 1.0));
    assert!(
        a.notes.iter().any(|n| n.contains("scale unknown")),
        "{:?}",
        a.notes
    );
}

#[test]
fn pickled_checkpoints_are_no_safetensors_and_name_torchtune() {
    let t = tempfile::tempdir().unwrap();
    // torchtune ≥ 0.5: epoch_N/adapter_model.pt beside adapter_config.json.
    let run = t.path().join("run/epoch_0");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("adapter_model.pt"), b"PK\x03\x04").unwrap();
    std::fs::write(
        run.join("adapter_config.json"),
        br#"{"r": 8, "lora_alpha": 16}"#,
    )
    .unwrap();
    // PEFT without safetensors: adapter_model.bin, no torchtune note.
    let peft = t.path().join("peft");
    std::fs::create_dir_all(&peft).unwrap();
    std::fs::write(peft.join("adapter_model.bin"), b"PK\x03\x04").unwrap();
    std::fs::write(
        peft.join("adapter_config.json"),
        br#"{"r": 8, "lora_alpha": 16}"#,
    )
    .unwrap();
    let v = discovery::scan(&ScanRequest {
        paths: vec![t.path().join("run"), peft],
        ..Default::default()
    });
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].kind, Kind::NoSafetensors);
    let note = v[0].notes.join(" | ");
    assert!(
        note.contains("adapter_model.pt") && note.contains("torchtune"),
        "{note}"
    );
    assert_eq!(v[1].kind, Kind::NoSafetensors);
    assert!(
        !v[1].notes.join(" ").contains("torchtune"),
        "{:?}",
        v[1].notes
    );
}
