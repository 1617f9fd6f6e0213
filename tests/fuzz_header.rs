//! Property test of the header parser and the layout model (issue 14's fuzz target): arbitrary
//! bytes, and valid synthetic adapters mutated (byte flips, truncations, huge and zero dims,
//! huge ranks, names with huge indices, numbers in the header JSON replaced), must never panic
//! and never allocate more than a constant times the file's size plus a constant.
//!
//! A counting global allocator records the peak of live heap bytes during each case. A fixed
//! seed and a bounded number of cases keep the run deterministic and quick.

use lorascope::adapter::format;
use lorascope::adapter::gguf::{self, GgmlType};
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::{Adapter, Source};
use lorascope::synth::{self, Dims, Pattern, Spec, TensorData};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Live heap bytes and their peak since the last `reset_peak`.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The two properties share the allocator's counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allowed peak: this many times the input's size, plus a constant for the fixed costs (the
/// config, error messages, small vectors). A delta's bookkeeping (its struct, module and target
/// names, a vector's growth: a few hundred bytes) can stand against only a few bytes of factor
/// data (one expert's slice of a tiny packed pair), so the factor is generous; what matters is
/// that memory grows with the file, never with the numbers a header claims.
const PER_BYTE: usize = 128;
const FIXED: usize = 1 << 20;

/// Runs `f` and returns the peak of heap bytes it added.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(14),
        failure_persistence: None,
        ..Config::default()
    }
}

fn load(dir: &Path) -> Adapter {
    let src = Source {
        history: None,
        id: "fuzz".into(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: vec![dir.join("adapter_model.safetensors")],
        revision: None,
        problem: None,
        other_files: vec![],
    };
    Adapter::load(&src, LayoutOptions::default())
}

/// Parses `bytes` as a header and loads them as an adapter file; checks the allocation bound.
fn check(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = dir.join("adapter_model.safetensors");
    std::fs::write(&path, bytes).expect("write");
    let size = bytes.len() as u64;
    let bound = PER_BYTE * bytes.len() + FIXED;
    if bytes.len() >= 8 {
        let json = &bytes[8..];
        let (_, peak) = peak_of(|| format::parse_header(&path, json, size));
        prop_assert!(peak <= bound, "parse_header: {peak} bytes for {size}");
    }
    let (a, peak) = peak_of(|| load(dir));
    prop_assert!(
        peak <= bound,
        "load: {peak} bytes for a {size}-byte file ({:?}: {} deltas)",
        a.kind,
        a.deltas.len()
    );
    // Whatever was accepted is bounded by the data too.
    prop_assert!(a.deltas.len() <= bytes.len());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_nor_balloon(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        len in prop_oneof![Just(None), (0u64..4096).prop_map(Some), any::<u64>().prop_map(Some)],
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        // Mostly a plausible length prefix, so that the JSON parser is reached.
        let mut bytes = len.unwrap_or(body.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        check(dir.path(), &bytes)?;
        // Also as JSON text: objects of objects with shapes and offsets.
        let text = format!(
            r#"{{"t": {{"dtype": "F32", "shape": [{}], "data_offsets": [0, {}]}}}}"#,
            body.iter().take(4).map(|b| (*b as u64).pow(3).to_string()).collect::<Vec<_>>().join(","),
            body.len()
        );
        let mut img = (text.len() as u64).to_le_bytes().to_vec();
        img.extend_from_slice(text.as_bytes());
        img.extend_from_slice(&body);
        check(dir.path(), &img)?;
    }

    #[test]
    fn mutated_adapters_never_panic_nor_balloon(
        pattern in 0usize..4,
        seed in any::<u64>(),
        ops in proptest::collection::vec((0u8..9, any::<u64>(), any::<u64>()), 1..5),
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let pattern = match pattern {
            0 => Pattern::Attention,
            1 => Pattern::AttentionRouter,
            2 => Pattern::PeftExperts { layers: vec![0, 2] },
            _ => Pattern::Tinker3d,
        };
        let mut spec = Spec::new(Dims::TOY, pattern);
        spec.seed = seed;
        spec.attn_rank = 2;
        spec.expert_rank = 1;
        // The config goes with the adapter (target_parameters, r, alpha).
        let mut tensors = synth::write_adapter(dir.path(), &spec).expect("synth").tensors;
        let mut raw_ops = vec![];
        for (op, x, y) in ops {
            if op < 6 {
                mutate_tensors(&mut tensors, op, x, y);
            } else {
                raw_ops.push((op, x, y));
            }
        }
        let mut bytes = synth::safetensors_bytes(&tensors, true);
        for (op, x, y) in raw_ops {
            mutate_bytes(&mut bytes, op, x, y);
        }
        check(dir.path(), &bytes)?;
    }
}

/// Huge numbers and zeros that hostile headers use.
const HOSTILE: [usize; 6] = [0, 1 << 20, 1 << 30, 1 << 40, u32::MAX as usize, usize::MAX];

/// Structural mutations; the file is re-serialised with offsets that fit the new shapes, so
/// the mutation reaches the layout model. Shapes whose data would exceed 4 MB are not kept.
fn mutate_tensors(ts: &mut Vec<TensorData>, op: u8, x: u64, y: u64) {
    if ts.is_empty() {
        return;
    }
    let i = x as usize % ts.len();
    let pick = HOSTILE[y as usize % HOSTILE.len()];
    let before = ts[i].clone();
    let t = &mut ts[i];
    match op {
        // A dimension becomes 0 or huge (with another one 0, so the data stays empty).
        0 => {
            let d = y as usize % t.shape.len().max(1);
            if t.shape.is_empty() {
                t.shape.push(pick);
            } else {
                t.shape[d] = pick;
            }
            if pick > 1 << 20 && t.shape.len() > 1 {
                let other = (d + 1) % t.shape.len();
                t.shape[other] = 0;
            }
        }
        // A huge rank on a small matrix: r×1 against 1×r.
        1 => {
            let r = 1 + (y as usize % 70_000);
            t.shape = if t.name.contains("lora_A") {
                vec![r, 1]
            } else {
                vec![1, r]
            };
        }
        // Names with huge layer or expert indices (and one past usize).
        2 => {
            let idx = match y % 3 {
                0 => usize::MAX.to_string(),
                1 => "4000000000".to_string(),
                _ => "99999999999999999999999".to_string(),
            };
            t.name = t
                .name
                .replacen("layers.0.", &format!("layers.{idx}."), 1)
                .replacen("experts.", &format!("experts.{idx}."), 1);
        }
        // A 3D expert tensor with many experts.
        3 => {
            let e = 1 + (y as usize % 9000);
            t.shape = vec![e, 1, 1];
        }
        // Drop or duplicate a tensor.
        4 => {
            ts.remove(i);
            return;
        }
        _ => {
            let mut c = t.clone();
            c.name.push_str(".copy");
            ts.push(c);
            return;
        }
    }
    let t = &mut ts[i];
    let bytes = t
        .shape
        .iter()
        .try_fold(t.dtype.bitsize().div_ceil(8), |acc, &d| acc.checked_mul(d));
    match bytes {
        Some(n) if n <= 4 << 20 => t.bytes = None,
        _ => ts[i] = before,
    }
}

/// Raw mutations of the file image: byte flips, truncation, numbers in the header replaced.
fn mutate_bytes(b: &mut Vec<u8>, op: u8, x: u64, y: u64) {
    if b.is_empty() {
        return;
    }
    match op {
        6 => {
            let at = x as usize % b.len();
            b[at] ^= 1 << (y % 8);
        }
        7 => b.truncate(x as usize % b.len()),
        _ => {
            // Replace the n-th number of the header JSON with a hostile one; fix the length.
            let hlen = u64::from_le_bytes(b[..8].try_into().expect("8")) as usize;
            let Some(json) = b.get(8..8 + hlen) else {
                return;
            };
            let text = String::from_utf8_lossy(json).into_owned();
            let spans: Vec<(usize, usize)> = number_spans(&text);
            if spans.is_empty() {
                return;
            }
            let (s, e) = spans[x as usize % spans.len()];
            let new = format!(
                "{}{}{}",
                &text[..s],
                HOSTILE[y as usize % HOSTILE.len()],
                &text[e..]
            );
            let mut out = (new.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(new.as_bytes());
            out.extend_from_slice(&b[8 + hlen..]);
            *b = out;
        }
    }
}

/// Byte ranges of runs of ASCII digits.
fn number_spans(s: &str) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                out.push((st, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

#[test]
fn a_header_of_many_tensors_parses_in_a_few_times_its_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 40k small tensors (a 3.4 MB header): entries become `TensorInfo`s one at a time, with no
    // whole-header JSON tree (which cost ~15× the header).
    let n = 40_000;
    let mut json = String::from("{");
    for i in 0..n {
        json.push_str(&format!(
            r#""layers.{}.experts.{}.w1.lora_A.weight":{{"dtype":"F32","shape":[1,1],"data_offsets":[{},{}]}},"#,
            i / 64,
            i % 64,
            4 * i,
            4 * i + 4
        ));
    }
    json.pop();
    json.push('}');
    let size = 8 + json.len() as u64 + 4 * n as u64;
    let (h, peak) = peak_of(|| format::parse_header(Path::new("big"), json.as_bytes(), size));
    assert_eq!(h.expect("valid").tensors.len(), n);
    assert!(
        peak <= 4 * json.len(),
        "{peak} bytes for a {}-byte header",
        json.len()
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF headers (adapter::gguf): the same properties for arbitrary and mutated GGUF files.

/// Parses `bytes` as a GGUF header and loads them as a `.gguf` adapter; checks the bound.
fn check_gguf(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = dir.join("adapter.gguf");
    std::fs::write(&path, bytes).expect("write");
    let size = bytes.len() as u64;
    let bound = PER_BYTE * bytes.len() + FIXED;
    let (_, peak) = peak_of(|| gguf::parse(&path, std::io::Cursor::new(bytes), size));
    prop_assert!(peak <= bound, "gguf::parse: {peak} bytes for {size}");
    let src = Source {
        history: None,
        id: "fuzz".into(),
        path: path.clone(),
        dir: dir.to_path_buf(),
        files: vec![path],
        revision: None,
        problem: None,
        other_files: vec![],
    };
    let (a, peak) = peak_of(|| Adapter::load(&src, LayoutOptions::default()));
    prop_assert!(
        peak <= bound,
        "load: {peak} bytes for a {size}-byte GGUF ({:?}: {} deltas)",
        a.kind,
        a.deltas.len()
    );
    prop_assert!(a.deltas.len() <= bytes.len());
    Ok(())
}

/// Numbers hostile GGUF headers state: counts, lengths, dims, types, offsets.
const HOSTILE_U64: [u64; 8] = [
    0,
    1,
    33,
    1 << 31,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
    u32::MAX as u64,
];

fn gguf_count() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..8,
        any::<u64>(),
        proptest::sample::select(HOSTILE_U64.to_vec())
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_gguf_headers_never_panic_nor_balloon(
        version in prop_oneof![Just(2u32), Just(3u32), any::<u32>()],
        n_tensors in gguf_count(),
        n_kv in gguf_count(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        bytes.extend_from_slice(&body);
        check_gguf(dir.path(), &bytes)?;
    }

    #[test]
    fn mutated_gguf_adapters_never_panic_nor_balloon(
        experts in any::<bool>(),
        ty in 0usize..4,
        seed in any::<u64>(),
        ops in proptest::collection::vec((0u8..4, any::<u64>(), any::<u64>()), 1..5),
    ) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let dims = Dims { hidden: 32, q_out: 32, kv_out: 32, inter: 32, experts: 2, layers: 2 };
        let mut spec = Spec::new(dims, if experts { Pattern::Tinker3d } else { Pattern::Attention });
        spec.seed = seed;
        spec.attn_rank = 2;
        spec.expert_rank = 1;
        let ty = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0][ty];
        let g = synth::generate(&spec);
        let mut bytes =
            gguf::file_bytes(&synth::gguf::metadata(&spec), &synth::gguf::tensors(&g, &spec, ty));
        for (op, x, y) in ops {
            if bytes.is_empty() {
                break;
            }
            let at = x as usize % bytes.len();
            match op {
                0 => bytes[at] ^= (y as u8) | 1,
                1 => {
                    let v = HOSTILE_U64[y as usize % HOSTILE_U64.len()].to_le_bytes();
                    let end = (at + 8).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
                2 => bytes.truncate(at),
                _ => {
                    let v = (HOSTILE_U64[y as usize % HOSTILE_U64.len()] as u32).to_le_bytes();
                    let end = (at + 4).min(bytes.len());
                    bytes[at..end].copy_from_slice(&v[..end - at]);
                }
            }
        }
        check_gguf(dir.path(), &bytes)?;
    }
}
