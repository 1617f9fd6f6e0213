//! Header-only reading of safetensors files: the 8-byte length, the JSON header, and a full
//! validation of offsets against shapes, dtypes and the file size. Tensor data is never read here.

use crate::adapter::gguf::GgmlType;
use crate::error::{Error, Result};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Headers larger than this are refused (the safetensors crate uses the same bound).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor as its header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range of the data, relative to the start of the data section.
    pub begin: u64,
    pub end: u64,
    /// GGUF block-quantised tensors (Q8_0, Q4_K, …): the ggml type; `dtype` is then `U8` (the
    /// storage) and `shape` the values' shape. None for safetensors and plain GGUF types.
    pub quant: Option<GgmlType>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> u64 {
        self.end - self.begin
    }
    /// The type as people read it: the safetensors dtype, or the GGUF quantisation (`Q8_0`).
    pub fn dtype_name(&self) -> String {
        match self.quant {
            Some(q) => q.name(),
            None => dtype_name(self.dtype),
        }
    }
}

/// A parsed and validated header.
#[derive(Debug, Clone)]
pub struct Header {
    pub path: PathBuf,
    pub file_size: u64,
    /// Offset of the data section in the file (8 + header length).
    pub data_start: u64,
    /// Tensors sorted by name.
    pub tensors: Vec<TensorInfo>,
    /// safetensors `__metadata__`, or a GGUF file's key/values (scalars as text, arrays summarised).
    pub metadata: BTreeMap<String, String>,
    /// The GGUF version of a GGUF file (`adapter::gguf`); None for safetensors.
    pub gguf_version: Option<u32>,
}

/// Name of a dtype as safetensors spells it (`F32`, `BF16`, ...).
pub fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Reads and validates the header of `path` without touching tensor data.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut f = crate::adapter::fsread::open_regular(path)?;
    let file_size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len8 = [0u8; 8];
    if file_size >= 8 {
        f.read_exact(&mut len8).map_err(|e| Error::io(path, e))?;
    }
    let n = header_len(path, len8, file_size)?;
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
    parse_header(path, &buf, file_size)
}

/// The header length from the file's first 8 bytes, checked against the file size. Shared by
/// local reads and HTTP Range reads (`hub`), which fetch exactly these bytes first.
pub fn header_len(path: &Path, len8: [u8; 8], file_size: u64) -> Result<u64> {
    let bad = |msg: String| Error::format(path, msg);
    if file_size < 8 {
        return Err(bad(format!(
            "truncated: {file_size} bytes, too short for a safetensors header"
        )));
    }
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_LEN {
        return Err(bad(format!(
            "header length {n} is absurd (limit {MAX_HEADER_LEN}): not a safetensors file or corrupt"
        )));
    }
    if n > file_size - 8 {
        return Err(bad(format!(
            "truncated: header says {n} bytes but the file has only {} after the length",
            file_size - 8
        )));
    }
    Ok(n)
}

/// Validates a header buffer (the JSON after the 8-byte length) against the file size.
pub fn parse_header(path: &Path, json: &[u8], file_size: u64) -> Result<Header> {
    let bad = |msg: String| Error::format(path, msg);
    let data_start = 8 + json.len() as u64;
    // Entries are parsed one at a time straight into `TensorInfo`s: a whole-header
    // `serde_json::Value` costs ~15× the header's size (1.2 GB for 760k tensors).
    let parsed = {
        let mut de = serde_json::Deserializer::from_slice(json);
        serde::Deserializer::deserialize_map(&mut de, EntriesVisitor).and_then(|p| {
            de.end()?;
            Ok(p)
        })
    };
    let Entries {
        mut tensors,
        metadata,
        error,
    } = match parsed {
        Ok(p) => p,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(bad("header is not a JSON object".into()))
        }
        Err(e) => return Err(bad(format!("header is not valid JSON ({e})"))),
    };
    let data_len = file_size.checked_sub(data_start).ok_or_else(|| {
        bad(format!(
            "truncated: the header ends at byte {data_start} but the file has {file_size}"
        ))
    })?;
    if let Some(m) = error {
        return Err(bad(m));
    }
    tensors.sort_by(|a, b| a.begin.cmp(&b.begin).then(a.name.cmp(&b.name)));
    // Offsets must tile the data section exactly, in order, with no holes or overlaps.
    let mut cursor = 0u64;
    for t in &tensors {
        if t.begin != cursor {
            return Err(bad(format!(
                "tensor '{}': data starts at {} but the previous tensor ends at {cursor} (overlap or hole)",
                t.name, t.begin
            )));
        }
        if t.end > data_len {
            return Err(bad(format!(
                "truncated or corrupt: tensor '{}' ends at byte {} of the data but the file holds only {data_len}",
                t.name, t.end
            )));
        }
        cursor = t.end;
    }
    if cursor != data_len {
        return Err(bad(format!(
            "file size mismatch: tensors cover {cursor} bytes of data but the file holds {data_len}"
        )));
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(bad(format!(
            "tensor '{}' appears twice in the header",
            w[0].name
        )));
    }
    Ok(Header {
        path: path.to_path_buf(),
        file_size,
        data_start,
        tensors,
        metadata,
        gguf_version: None,
    })
}

/// What the header's JSON object holds; `error` is the first bad entry (later ones are skipped).
struct Entries {
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    error: Option<String>,
}

struct EntriesVisitor;

impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Entries, M::Error> {
        let mut out = Entries {
            tensors: Vec::new(),
            metadata: BTreeMap::new(),
            error: None,
        };
        while let Some(name) = map.next_key::<String>()? {
            if out.error.is_some() {
                // Still read the rest: invalid JSON later on is reported as such.
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            // One entry's value at a time: small, and dropped before the next.
            let entry: serde_json::Value = map.next_value()?;
            if name == "__metadata__" {
                if let Some(m) = entry.as_object() {
                    for (k, v) in m {
                        let v = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        out.metadata.insert(k.clone(), v);
                    }
                }
                continue;
            }
            match parse_entry(name, &entry) {
                Ok(t) => out.tensors.push(t),
                Err((name, m)) => out.error = Some(format!("tensor '{name}': {m}")),
            }
        }
        Ok(out)
    }
}

fn parse_entry(
    name: String,
    v: &serde_json::Value,
) -> std::result::Result<TensorInfo, (String, String)> {
    match entry_fields(v) {
        Ok((dtype, shape, begin, end)) => Ok(TensorInfo {
            name,
            dtype,
            shape,
            begin,
            end,
            quant: None,
        }),
        Err(m) => Err((name, m)),
    }
}

type Fields = (Dtype, Vec<usize>, u64, u64);

fn entry_fields(v: &serde_json::Value) -> std::result::Result<Fields, String> {
    let o = v.as_object().ok_or("entry is not an object")?;
    let dtype_str = o
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or("missing dtype")?;
    let dtype: Dtype = serde_json::from_value(serde_json::Value::String(dtype_str.into()))
        .map_err(|_| format!("unknown dtype '{dtype_str}'"))?;
    let shape = o
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("missing shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|x| x as usize)
                .ok_or("shape has a non-integer")
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let offs = o
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .filter(|a| a.len() == 2)
        .ok_or("missing data_offsets")?;
    let (begin, end) = match (offs[0].as_u64(), offs[1].as_u64()) {
        (Some(b), Some(e)) if b <= e => (b, e),
        _ => return Err("data_offsets are not two increasing integers".into()),
    };
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or("shape overflows")?;
    let bits = numel
        .checked_mul(dtype.bitsize() as u64)
        .ok_or("shape overflows")?;
    let want = bits.div_ceil(8);
    if want != end - begin {
        return Err(format!(
            "shape {shape:?} of {dtype_str} needs {want} bytes but data_offsets span {}",
            end - begin
        ));
    }
    Ok((dtype, shape, begin, end))
}

/// Reads one scalar (e.g. kohya's `.alpha`) at an absolute file offset.
pub fn read_scalar(path: &Path, offset: u64, dtype: Dtype) -> Result<f64> {
    use std::io::{Seek, SeekFrom};
    let size = dtype.bitsize().div_ceil(8);
    let mut f = crate::adapter::fsread::open_regular(path)?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b[..size.min(8)])
        .map_err(|e| Error::io(path, e))?;
    Ok(match dtype {
        Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        Dtype::F64 => f64::from_le_bytes(b),
        Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        Dtype::I64 => i64::from_le_bytes(b) as f64,
        Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        other => {
            return Err(Error::format(
                path,
                format!("alpha scalar has dtype {other:?}, expected a float"),
            ))
        }
    })
}

// Writing: one safetensors writer for every file lorascope writes (export, synth, the demo).

/// A tensor to write; `bytes: None` leaves a hole (zeros) of the right size.
#[derive(Debug, Clone)]
pub struct TensorData {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Option<Vec<u8>>,
}

impl TensorData {
    pub fn nbytes(&self) -> usize {
        (self.shape.iter().product::<usize>() * self.dtype.bitsize()).div_ceil(8)
    }
}

/// Encodes values (row-major) in a float dtype (F64, F32, F16, BF16), little-endian, rounding
/// to nearest. Callers pass float dtypes only.
pub fn encode(values: &[f64], dtype: Dtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.bitsize() / 8);
    encode_into(values, dtype, &mut out);
    out
}

/// `encode`, appended to `out`.
pub fn encode_into(values: &[f64], dtype: Dtype, out: &mut Vec<u8>) {
    match dtype {
        Dtype::F64 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        Dtype::F32 => out.extend(values.iter().flat_map(|v| (*v as f32).to_le_bytes())),
        Dtype::F16 => out.extend(
            values
                .iter()
                .flat_map(|v| half::f16::from_f64(*v).to_le_bytes()),
        ),
        Dtype::BF16 => out.extend(
            values
                .iter()
                .flat_map(|v| half::bf16::from_f64(*v).to_le_bytes()),
        ),
        other => unreachable!("encode takes float dtypes only, not {other:?}"),
    }
}

/// A safetensors file image (header + data), tensors in the order given; holes are zero-filled.
/// `metadata` becomes `__metadata__`.
pub fn file_bytes(tensors: &[TensorData], metadata: &[(&str, &str)], aligned: bool) -> Vec<u8> {
    let (header, total) = header_bytes(tensors, metadata, aligned);
    let mut out = Vec::with_capacity(8 + header.len() + total);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors {
        match &t.bytes {
            Some(b) => out.extend_from_slice(b),
            None => out.resize(out.len() + t.nbytes(), 0),
        }
    }
    out
}

/// `file_bytes` of owned tensors, each freed once copied: the image and the tensors are not
/// held twice (the image's pages are only touched as it is filled).
pub fn file_bytes_from(
    mut tensors: Vec<TensorData>,
    metadata: &[(&str, &str)],
    aligned: bool,
) -> Vec<u8> {
    let (header, total) = header_bytes(&tensors, metadata, aligned);
    let mut out = Vec::with_capacity(8 + header.len() + total);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for t in tensors.iter_mut() {
        match t.bytes.take() {
            Some(b) => out.extend_from_slice(&b),
            None => out.resize(out.len() + t.nbytes(), 0),
        }
    }
    out
}

/// The JSON header (padded with spaces so that the data starts 8-byte aligned, or deliberately
/// not, for tests of unaligned files) and the size of the data section.
pub fn header_bytes(
    tensors: &[TensorData],
    metadata: &[(&str, &str)],
    aligned: bool,
) -> (Vec<u8>, usize) {
    let mut map = serde_json::Map::new();
    let mut off = 0usize;
    for t in tensors {
        let n = t.nbytes();
        map.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype),
                "shape": t.shape,
                "data_offsets": [off, off + n],
            }),
        );
        off += n;
    }
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    map.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut header = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default();
    let want = if aligned {
        (8 - header.len() % 8) % 8
    } else {
        (8 - header.len() % 8) % 8 + 3
    };
    header.extend(std::iter::repeat_n(b' ', want));
    (header, off)
}
