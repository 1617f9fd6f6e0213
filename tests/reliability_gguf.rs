//! Hostile GGUF files: every count, length, dimension, type and offset a GGUF header states can
//! lie. Each lie is an `error` adapter whose message says what is wrong, read quickly and with
//! little memory; nothing panics, and the rest of a scan goes on. (The safetensors counterpart
//! is tests/reliability_input.rs; the property test is tests/fuzz_header.rs.)

mod support;

use lorascope::adapter::discovery;
use lorascope::adapter::gguf::{self, GgmlType, Value, WriteTensor};
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::{Adapter, Kind};
use std::path::Path;
use std::time::{Duration, Instant};

/// A GGUF header written field by field, to say anything a hostile file may say.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn start(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, x: u32) -> &mut Raw {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Raw {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A string key/value.
    fn kv(&mut self, k: &str, v: &str) -> &mut Raw {
        self.str(k).u32(8).str(v)
    }
    /// A tensor info.
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` bytes of data.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.0.clone();
        v.resize(v.len().div_ceil(32) * 32 + n, 0);
        v
    }
}

/// Loads `bytes` as a `.gguf` file; returns the adapter and how long it took.
fn load(dir: &Path, bytes: &[u8]) -> Adapter {
    let path = dir.join("x.gguf");
    std::fs::write(&path, bytes).unwrap();
    let src = discovery::discover_path(&path);
    let t = Instant::now();
    let a = Adapter::load(&src[0], LayoutOptions::default());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    a
}

/// The file is an error adapter whose message contains `want`.
fn refused(bytes: &[u8], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = load(dir.path(), bytes);
    assert_eq!(a.kind, Kind::Error, "{want}: read as {:?}", a.kind);
    let e = a.error.unwrap();
    assert!(e.contains(want), "expected '{want}' in: {e}");
    assert!(e.contains("x.gguf"), "the message names the file: {e}");
}

#[test]
fn a_big_endian_file_says_so() {
    let mut r = Raw(b"GGUF".to_vec());
    r.0.extend_from_slice(&3u32.to_be_bytes());
    r.0.extend_from_slice(&0u64.to_be_bytes());
    r.0.extend_from_slice(&0u64.to_be_bytes());
    refused(&r.0, "big-endian GGUF file (version 3)");
}

#[test]
fn versions_other_than_2_and_3_and_other_magic_are_refused() {
    refused(&Raw::start(1, 0, 0).0, "version 1 is not supported");
    refused(&Raw::start(4, 0, 0).0, "version 4 is newer");
    refused(b"GGML\x03\0\0\0", "not a GGUF file");
    refused(b"GG", "too short");
    // Version 2 is read like 3.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(dir.path(), &Raw::start(2, 0, 0).0).kind, Kind::Empty);
}

#[test]
fn counts_the_file_cannot_hold_fail_before_any_loop() {
    refused(&Raw::start(3, 1 << 60, 0).0, "do not fit");
    refused(&Raw::start(3, 0, u64::MAX).0, "do not fit");
    // Counts that fit the bound but not the file: truncated at the first missing field.
    let mut r = Raw::start(3, 0, 2);
    r.kv("general.type", "adapter");
    r.0.extend_from_slice(&[0xFF; 40]);
    refused(&r.0, "truncated or corrupt");
}

#[test]
fn lengths_that_lie_are_refused_without_allocating_them() {
    let mut r = Raw::start(3, 0, 1);
    r.u64(u64::MAX);
    r.0.extend_from_slice(&[0; 16]);
    refused(&r.0, "a key needs");
    let mut r = Raw::start(3, 0, 1);
    r.str("general.name").u32(8).u64(1 << 50);
    refused(&r.0, "the value of 'general.name' needs");
    // An array of 2^62 strings, each at least its 8-byte length: refused before the loop.
    let mut r = Raw::start(3, 0, 1);
    r.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(1 << 62);
    refused(&r.0, "tokenizer.ggml.tokens");
    let mut r = Raw::start(3, 0, 1);
    r.str("a").u32(9).u32(6).u64(u64::MAX);
    refused(&r.0, "the value of 'a'");
    // Nested arrays are not GGUF (gguf.cpp refuses them).
    let mut r = Raw::start(3, 0, 1);
    r.str("a").u32(9).u32(9).u64(1);
    refused(&r.0, "array of invalid type 9");
    let mut r = Raw::start(3, 0, 1);
    r.str("a").u32(77);
    r.0.extend_from_slice(&[0; 16]);
    refused(&r.0, "invalid GGUF type 77");
}

#[test]
fn duplicate_keys_names_and_bad_alignment_are_refused() {
    let mut r = Raw::start(3, 0, 2);
    r.kv("general.type", "adapter").kv("general.type", "model");
    refused(&r.0, "duplicate key 'general.type'");
    let mut r = Raw::start(3, 2, 0);
    r.tensor("t", &[32], 0, 0).tensor("t", &[32], 0, 128);
    refused(&r.data(256), "appears twice");
    let mut r = Raw::start(3, 0, 1);
    r.str("general.alignment").u32(4).u32(24);
    refused(&r.0, "not a power of two");
    let mut r = Raw::start(3, 0, 1);
    r.kv("general.alignment", "32");
    refused(&r.0, "not a power of two");
    let long = "x".repeat(64);
    let mut r = Raw::start(3, 1, 0);
    r.tensor(&long, &[32], 0, 0);
    refused(&r.data(128), "fewer than 64");
}

#[test]
fn dimensions_types_and_offsets_that_lie_are_refused() {
    let one = |ne: &[u64], ty: u32, offset: u64, data: usize| {
        let mut r = Raw::start(3, 1, 0);
        r.tensor("blk.0.attn_q.weight.lora_a", ne, ty, offset);
        r.data(data)
    };
    refused(&one(&[1, 1, 1, 1, 1], 0, 0, 4), "5 dimensions");
    refused(&one(&[1 << 40, 1 << 40], 0, 0, 4), "overflow");
    refused(&one(&[u64::MAX], 0, 0, 4), "overflow");
    refused(&one(&[1 << 31, 1 << 31], 0, 0, 4), "too large");
    refused(&one(&[32], 99, 0, 128), "unknown ggml type 99");
    refused(
        &one(&[33, 2], 8, 0, 128),
        "not a multiple of its block size 32",
    );
    refused(&one(&[32, 4], 0, 0, 100), "ends at byte 512");
    refused(&one(&[32, 4], 0, 32, 1024), "has offset 32");
    refused(&one(&[1 << 30, 4], 0, 0, 1024), "truncated or corrupt");
    // The data section cannot start past the file's end.
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[8], 0, 0);
    refused(&r.0, "the data section starts");
}

/// Every prefix of a real adapter file is refused (or read as what it holds), never a panic.
#[test]
fn every_truncation_of_an_adapter_is_refused_cleanly() {
    let ts: Vec<WriteTensor> = [("lora_a", vec![64, 4]), ("lora_b", vec![4, 32])]
        .into_iter()
        .map(|(f, ne)| {
            let n: u64 = ne.iter().product();
            let v: Vec<f64> = (0..n).map(|i| i as f64 * 1e-3).collect();
            WriteTensor {
                name: format!("blk.0.attn_q.weight.{f}"),
                ty: if f == "lora_a" {
                    GgmlType::Q8_0
                } else {
                    GgmlType::F16
                },
                data: gguf::encode(
                    &v,
                    if f == "lora_a" {
                        GgmlType::Q8_0
                    } else {
                        GgmlType::F16
                    },
                ),
                ne,
            }
        })
        .collect();
    let kv = [
        ("general.type", Value::Str("adapter".into())),
        ("adapter.type", Value::Str("lora".into())),
        ("adapter.lora.alpha", Value::F32(8.0)),
    ];
    let bytes = gguf::file_bytes(&kv, &ts);
    let dir = tempfile::tempdir().unwrap();
    let whole = load(dir.path(), &bytes);
    assert_eq!(
        (whole.kind, whole.deltas.len()),
        (Kind::Lora, 1),
        "{:?}",
        whole.error
    );
    for n in 0..bytes.len() {
        let a = load(dir.path(), &bytes[..n]);
        assert_eq!(
            a.kind,
            Kind::Error,
            "a {n}-byte prefix was read as {:?}",
            a.kind
        );
    }
}

/// A scan with hostile GGUF files lists them as errors and reads everything else.
#[test]
fn a_scan_goes_on_past_hostile_gguf_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-huge.gguf"), Raw::start(3, 1 << 60, 0).0).unwrap();
    let mut be = b"GGUF".to_vec();
    be.extend_from_slice(&3u32.to_be_bytes());
    std::fs::write(dir.path().join("b-be.gguf"), be).unwrap();
    let mut spec = lorascope::synth::Spec::new(
        lorascope::synth::Dims::TOY,
        lorascope::synth::Pattern::Attention,
    );
    spec.attn_rank = 2;
    lorascope::synth::gguf::write_adapter(&dir.path().join("c-good.gguf"), &spec, GgmlType::F32)
        .unwrap();
    let out = support::lorascope(
        &["scan", dir.path().to_str().unwrap(), "--json"],
        dir.path(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(kinds[0].0, "error");
    assert!(kinds[1].1.contains("big-endian"), "{kinds:?}");
    assert_eq!(kinds[2], ("lora", ""));
}
