//! Adapters written by the real writers (PEFT's save_pretrained, mlx-lm's adapter save) for a tiny
//! gpt-oss, against the statistics of the writers' own deltas (PEFT `get_delta_weight`, mlx-lm
//! `fuse()` minus the base weight). Made by tests/fixtures/writers/make.py; no Python needed here.

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::layout::{DeltaKey, Format};
use lorascope::adapter::{Adapter, Kind};
use lorascope::compute::stats::{self, Control, Filter};
use serde::Deserialize;
use std::path::PathBuf;

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

fn fixture(name: &str) -> (Adapter, Vec<Expected>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/writers")
        .join(name);
    let mut v = discovery::scan(&ScanRequest {
        cache: None,
        paths: vec![dir.clone()],
        layout: Default::default(),
    });
    assert_eq!(v.len(), 1, "one adapter in {name}");
    let expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (v.pop().unwrap(), expected)
}

/// Every delta the writer made, with its rank, scale and statistics; nothing else.
fn check(name: &str, format: Format) {
    let (a, expected) = fixture(name);
    assert_eq!(a.kind, Kind::Lora, "{name}: {:?}", a.error);
    assert_eq!(a.format(), Some(format), "{name}");
    assert_eq!(a.unrecognised(), 0, "{name}: {:?}", a.notes);
    let st = stats::compute(&a, &Filter::default(), &Control::default()).unwrap();
    assert_eq!(st.deltas.len(), expected.len(), "{name}: delta count");
    for e in &expected {
        let key = DeltaKey::new(Some(e.layer), e.target.as_str(), e.expert);
        let d = a
            .deltas
            .iter()
            .find(|d| d.key() == key)
            .unwrap_or_else(|| panic!("{name}: no delta {key:?}"));
        let s = st
            .deltas
            .iter()
            .find(|s| s.key() == key)
            .expect("stats of the delta");
        assert_eq!(d.rank, e.rank, "{name} {key:?} rank");
        assert!(
            (d.scale - e.scale).abs() <= 1e-12 * e.scale,
            "{name} {key:?} scale {} vs {}",
            d.scale,
            e.scale
        );
        // The writers form ΔW in f32; lorascope works on the same f32 factors in f64.
        let tol = 1e-5 * e.singular_values[0];
        assert!(
            (s.fro_norm - e.fro_norm).abs() <= tol,
            "{name} {key:?} fro {} vs {}",
            s.fro_norm,
            e.fro_norm
        );
        for (k, (x, y)) in s.singular_values.iter().zip(&e.singular_values).enumerate() {
            assert!((x - y).abs() <= tol, "{name} {key:?} σ{k}: {x} vs {y}");
        }
    }
}

#[test]
fn peft_save_pretrained_attention_and_target_parameters_with_rslora() {
    check("peft-gpt-oss", Format::Peft);
}

#[test]
fn mlx_lm_lora_linear_router_and_switch_layers() {
    check("mlx-gpt-oss", Format::Mlx);
}
