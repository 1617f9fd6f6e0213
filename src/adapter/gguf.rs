//! GGUF (llama.cpp, Ollama, LM Studio) files: the header read and validated as llama.cpp's
//! `ggml/src/gguf.cpp` (`gguf_init_from_file_impl`) reads it, versions 2 and 3, little-endian;
//! the Q8_0 block codec; and a small writer for synthetic files.
//!
//! Only the header is read (magic, version, counts, key/values, tensor infos); tensor data stays
//! on disk and is reached through the same mmap as safetensors data (`compute::tensor`). Every
//! count, length, dimension and offset the file states is checked against the bytes that remain
//! before anything is allocated for it, so that no claim makes the reader allocate beyond the
//! file's size, loop beyond it, or overflow. docs/architecture.md says why this is not a crate.

use crate::adapter::format::{Header, TensorInfo};
use crate::error::{Error, Result};
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The file's first four bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// llama.cpp's `GGUF_DEFAULT_ALIGNMENT`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// llama.cpp's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// llama.cpp's `GGML_MAX_NAME` (a tensor name is shorter).
pub const MAX_NAME: usize = 64;
/// The most header bytes read: a whole model's tokenizer arrays take a few MB, an adapter's
/// header a few KB. Also bounds the time a hostile header of length-prefixed nothing can take.
pub const MAX_HEADER_LEN: u64 = 256 << 20;

/// Whether a path names a GGUF file (by its extension, as llama.cpp's tools name them).
pub fn is_gguf_path(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
}

/// A ggml tensor type (`enum ggml_type`), with its block size and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

/// `(id, name, values per block, bytes per block)`: gguf-py `GGML_QUANT_SIZES`
/// (gguf-py/gguf/constants.py), the same numbers as ggml's `type_traits`.
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }
    /// Whether ggml knows the type (its sizes are in the table).
    pub fn known(self) -> bool {
        self.entry().is_some()
    }
    pub fn name(self) -> String {
        self.entry()
            .map_or_else(|| format!("type {}", self.0), |t| t.1.to_string())
    }
    /// Values per block (1 for plain element types).
    pub fn block(self) -> u64 {
        self.entry().map_or(1, |t| t.2)
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.entry().map_or(1, |t| t.3)
    }
    /// The safetensors dtype of a plain element type; None for a block-quantised one.
    pub fn dtype(self) -> Option<Dtype> {
        Some(match self.0 {
            0 => Dtype::F32,
            1 => Dtype::F16,
            24 => Dtype::I8,
            25 => Dtype::I16,
            26 => Dtype::I32,
            27 => Dtype::I64,
            28 => Dtype::F64,
            30 => Dtype::BF16,
            _ => return None,
        })
    }
    /// Whether lorascope reads this type's values (F32, F16, BF16, F64 and Q8_0).
    pub fn readable(self) -> bool {
        matches!(self.0, 0 | 1 | 28 | 30 | 8)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// A bounded reader: every length is checked against the bytes left in the file (and the header
/// limit) before it is read, skipped or allocated.
struct Src<R: Read + Seek> {
    r: BufReader<R>,
    pos: u64,
    size: u64,
}

/// What went wrong, before the path is attached.
type Bad = String;

impl<R: Read + Seek> Src<R> {
    fn left(&self) -> u64 {
        self.size.min(MAX_HEADER_LEN).saturating_sub(self.pos)
    }
    /// Fails unless `n` more bytes are there to read.
    fn need(&self, n: u64, what: &str) -> std::result::Result<(), Bad> {
        if n > self.left() {
            return Err(if self.pos.saturating_add(n) > self.size {
                format!(
                    "truncated or corrupt: {what} needs {n} bytes at byte {} but the file has {}",
                    self.pos, self.size
                )
            } else {
                format!("header larger than the {MAX_HEADER_LEN} bytes lorascope reads ({what})")
            });
        }
        Ok(())
    }
    fn bytes<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], Bad> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u32(&mut self, what: &str) -> std::result::Result<u32, Bad> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }
    fn u64(&mut self, what: &str) -> std::result::Result<u64, Bad> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }
    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), Bad> {
        self.need(n, what)?;
        // `need` bounds n by the file size, which fits an i64.
        self.r
            .seek_relative(n as i64)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        self.pos += n;
        Ok(())
    }
    /// A GGUF string: u64 length, then that many bytes (UTF-8 expected, read lossily).
    fn string(&mut self, what: &str) -> std::result::Result<String, Bad> {
        let n = self.u64(what)?;
        self.need(n, what)?;
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("cannot read {what}: {e}"))?;
        self.pos += n;
        Ok(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
    }
}

/// Size in bytes of a fixed-size GGUF value type (`enum gguf_type`); None for string and array.
fn value_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// Reads a string or array value as text (arrays are skipped and summarised).
fn value<R: Read + Seek>(src: &mut Src<R>, t: u32, key: &str) -> std::result::Result<String, Bad> {
    let what = format!("the value of '{key}'");
    match t {
        STRING => src.string(&what),
        ARRAY => {
            let et = src.u32(&what)?;
            let n = src.u64(&what)?;
            match (et, value_size(et)) {
                (_, Some(sz)) => src.skip(n.saturating_mul(sz), &what)?,
                (STRING, None) => {
                    // Each string has at least its 8-byte length: a count the file cannot hold
                    // fails before the loop starts.
                    src.need(n.saturating_mul(8), &what)?;
                    for _ in 0..n {
                        let len = src.u64(&what)?;
                        src.skip(len, &what)?;
                    }
                }
                _ => return Err(format!("key '{key}' is an array of invalid type {et}")),
            }
            let name = TYPE_NAMES.get(et as usize).copied().unwrap_or("?");
            Ok(format!("[{n} × {name}]"))
        }
        _ => Err(format!("key '{key}' has invalid GGUF type {t}")),
    }
}

const TYPE_NAMES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

/// A fixed-size scalar value as text (floats exactly, as f64).
fn scalar<R: Read + Seek>(
    src: &mut Src<R>,
    t: u32,
    key: &str,
) -> std::result::Result<(String, Option<u32>), Bad> {
    let what = format!("the value of '{key}'");
    let v = match t {
        0 => (src.bytes::<1>(&what)?[0] as u64).to_string(),
        1 => (src.bytes::<1>(&what)?[0] as i8).to_string(),
        2 => u16::from_le_bytes(src.bytes(&what)?).to_string(),
        3 => i16::from_le_bytes(src.bytes(&what)?).to_string(),
        4 => {
            let v = src.u32(&what)?;
            return Ok((v.to_string(), Some(v)));
        }
        5 => i32::from_le_bytes(src.bytes(&what)?).to_string(),
        6 => (f32::from_le_bytes(src.bytes(&what)?) as f64).to_string(),
        7 => (src.bytes::<1>(&what)?[0] != 0).to_string(),
        10 => src.u64(&what)?.to_string(),
        11 => i64::from_le_bytes(src.bytes(&what)?).to_string(),
        12 => f64::from_le_bytes(src.bytes(&what)?).to_string(),
        _ => return Err(format!("key '{key}' has invalid GGUF type {t}")),
    };
    Ok((v, None))
}

/// Reads and validates the header of the GGUF file at `path` without touching tensor data.
pub fn read_header(path: &Path) -> Result<Header> {
    let f = crate::adapter::fsread::open_regular(path)?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    parse(path, f, size)
}

/// The header is read in chunks of this size: a gpt-oss adapter's header (336 tensor infos,
/// ~25 kB) takes two reads; a 64 kB buffer cost more in fresh pages than the reads it saved.
const READ_CHUNK: usize = 16 << 10;

/// Parses a GGUF header from `r` (positioned at the file's start; `size` bytes long). Shared by
/// the file reader and the tests' fuzzing over bytes in memory.
pub fn parse<R: Read + Seek>(path: &Path, r: R, size: u64) -> Result<Header> {
    let mut src = Src {
        r: BufReader::with_capacity(READ_CHUNK, r),
        pos: 0,
        size,
    };
    parse_src(&mut src, path, size).map_err(|m| Error::format(path, m))
}

/// One tensor info as the file states it.
struct RawInfo {
    name: String,
    ne: Vec<u64>,
    ty: GgmlType,
    offset: u64,
}

fn parse_src<R: Read + Seek>(
    src: &mut Src<R>,
    path: &Path,
    size: u64,
) -> std::result::Result<Header, Bad> {
    if size < 4 {
        return Err(format!(
            "truncated: {size} bytes, too short for a GGUF header"
        ));
    }
    let magic: [u8; 4] = src.bytes("the magic")?;
    if &magic != MAGIC {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = src.u32("the version")?;
    // llama.cpp's test: a big-endian file's version reads as (v << 24) here.
    if version & 0x0000_FFFF == 0 {
        return Err(format!(
            "a big-endian GGUF file (version {}): lorascope reads little-endian GGUF only",
            version.swap_bytes()
        ));
    }
    if version == 1 {
        return Err("GGUF version 1 is not supported (llama.cpp reads versions 2 and 3)".into());
    }
    if version > 3 {
        return Err(format!(
            "GGUF version {version} is newer than the versions lorascope reads (2 and 3)"
        ));
    }
    let n_tensors = src.u64("the tensor count")?;
    let n_kv = src.u64("the key/value count")?;
    // Each key/value takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 4 + 8: counts the
    // file cannot hold fail here, before any loop or allocation.
    if n_kv > src.left() / 13 || n_tensors > src.left() / 24 {
        return Err(format!(
            "truncated or corrupt: {n_kv} key/values and {n_tensors} tensors do not fit in {size} bytes"
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..n_kv {
        let key = src.string("a key")?;
        let t = src.u32("a value type")?;
        if metadata.contains_key(&key) {
            return Err(format!("duplicate key '{key}'"));
        }
        let (v, as_u32) = if matches!(t, STRING | ARRAY) {
            (value(src, t, &key)?, None)
        } else {
            scalar(src, t, &key)?
        };
        if key == "general.alignment" {
            // gguf.cpp: a u32, a non-zero power of two.
            match as_u32 {
                Some(a) if a.is_power_of_two() => alignment = a as u64,
                _ => return Err(format!("general.alignment {v} is not a power of two (u32)")),
            }
        }
        metadata.insert(key, v);
    }
    let mut infos: Vec<RawInfo> = Vec::new();
    let mut names = BTreeSet::new();
    for _ in 0..n_tensors {
        let name = src.string("a tensor name")?;
        if name.len() >= MAX_NAME {
            return Err(format!(
                "tensor name '{name}' is {} bytes, ggml allows fewer than {MAX_NAME}",
                name.len()
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("tensor '{name}' appears twice in the header"));
        }
        let n_dims = src.u32("a tensor's dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor '{name}' has {n_dims} dimensions, ggml allows at most {MAX_DIMS}"
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(src.u64("a tensor dimension")?);
        }
        let ty = GgmlType(src.u32("a tensor type")?);
        let offset = src.u64("a tensor offset")?;
        infos.push(RawInfo {
            name,
            ne,
            ty,
            offset,
        });
    }
    let header_end = src.pos;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let data_len = size.saturating_sub(data_start);
    if !infos.is_empty() && data_start > size {
        return Err(format!(
            "truncated: the data section starts at byte {data_start} but the file has {size}"
        ));
    }
    let mut tensors = Vec::with_capacity(infos.len());
    let mut expected = 0u64;
    for ti in infos {
        let t = tensor_info(&ti)?;
        // gguf.cpp: offsets are the running sum of the padded sizes, in the infos' order.
        if ti.offset != expected {
            return Err(format!(
                "tensor '{}' has offset {} but the tensors before it end at {expected}",
                ti.name, ti.offset
            ));
        }
        let end = ti.offset + t.end;
        if end > data_len {
            return Err(format!(
                "truncated or corrupt: tensor '{}' ends at byte {end} of the data but the file holds only {data_len}",
                ti.name
            ));
        }
        // end ≤ data_len < 2^63, so the padding cannot overflow.
        expected = end.div_ceil(alignment) * alignment;
        tensors.push(TensorInfo {
            begin: ti.offset,
            end,
            ..t
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header {
        path: path.to_path_buf(),
        file_size: size,
        data_start,
        tensors,
        metadata,
        gguf_version: Some(version),
    })
}

/// The tensor as lorascope sees it (row-major shape: ggml's `ne` reversed), with its byte length
/// in `end` (`begin` 0), after the checks `gguf.cpp` makes.
fn tensor_info(ti: &RawInfo) -> std::result::Result<TensorInfo, Bad> {
    let name = &ti.name;
    if !ti.ty.known() {
        return Err(format!("tensor '{name}' has unknown ggml type {}", ti.ty.0));
    }
    // ne are int64 in ggml: each non-negative and their product within i64.
    let numel = ti
        .ne
        .iter()
        .try_fold(1u64, |acc, &d| {
            (d <= i64::MAX as u64).then(|| acc.checked_mul(d)).flatten()
        })
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("tensor '{name}' has dimensions {:?} that overflow", ti.ne))?;
    let block = ti.ty.block();
    let ne0 = ti.ne.first().copied().unwrap_or(1);
    if ne0 % block != 0 {
        return Err(format!(
            "tensor '{name}' of type {} has {ne0} values per row, not a multiple of its block size {block}",
            ti.ty.name()
        ));
    }
    let nbytes = (numel / block)
        .checked_mul(ti.ty.block_bytes())
        .ok_or_else(|| format!("tensor '{name}' is too large"))?;
    let shape = ti
        .ne
        .iter()
        .rev()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor '{name}' is too large")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(TensorInfo {
        name: name.clone(),
        dtype: ti.ty.dtype().unwrap_or(Dtype::U8),
        shape,
        begin: 0,
        end: nbytes,
        quant: ti.ty.dtype().is_none().then_some(ti.ty),
    })
}

// ---------------------------------------------------------------------------------------------
// Q8_0: blocks of 32 values, an f16 scale d then 32 i8 q; value = d·q (ggml-quants.c
// `dequantize_row_q8_0`, gguf-py quants.py `Q8_0`).

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 34;

/// Dequantises whole Q8_0 blocks (`raw.len()` a multiple of 34) into `out` (32 per block).
pub fn dequantize_q8_0(raw: &[u8], out: &mut [f32]) {
    for (b, o) in raw
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(Q8_0_BLOCK))
    {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (x, &q) in o.iter_mut().zip(&b[2..]) {
            *x = d * (q as i8) as f32;
        }
    }
}

/// Quantises values (a multiple of 32) to Q8_0 bit for bit as gguf-py's `Q8_0.quantize_blocks`
/// (and ggml's reference `quantize_row_q8_0_ref`): d = max|x| / 127, q = round-half-away(x / d).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * Q8_0_BYTES);
    for blk in values.chunks(Q8_0_BLOCK) {
        let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|x| ((x * id).round() as i8) as u8));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Writing (synthetic adapters and tests): the layout gguf-py's GGUFWriter writes.

/// A metadata value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    F32(f32),
    Str(String),
}

/// A tensor to write: its ggml type, `ne` (fastest dimension first) and encoded bytes.
#[derive(Debug, Clone)]
pub struct WriteTensor {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
    pub data: Vec<u8>,
}

impl WriteTensor {
    /// Bytes of its data, from `ne` and the type (`data` may be empty: a hole of zeros).
    pub fn nbytes(&self) -> u64 {
        self.ne.iter().product::<u64>() / self.ty.block() * self.ty.block_bytes()
    }
}

fn pad(n: u64) -> u64 {
    n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

/// A GGUF v3 file image: header, key/values, tensor infos, then the data, each tensor padded to
/// the default 32-byte alignment (gguf-py `GGUFWriter`); an empty `data` is written as zeros.
pub fn file_bytes(kv: &[(&str, Value)], tensors: &[WriteTensor]) -> Vec<u8> {
    let mut out = header_bytes(kv, tensors);
    for t in tensors {
        if t.data.is_empty() {
            out.resize(out.len() + t.nbytes() as usize, 0);
        } else {
            out.extend_from_slice(&t.data);
        }
        out.resize(pad(out.len() as u64) as usize, 0);
    }
    out
}

/// Writes the file of `file_bytes`; tensors with empty `data` are holes (a sparse file: header
/// benchmarks at real sizes take no disk space).
pub fn write_file(
    path: &Path,
    kv: &[(&str, Value)],
    tensors: &[WriteTensor],
) -> std::io::Result<()> {
    use std::io::{SeekFrom, Write};
    let mut f = std::fs::File::create(path)?;
    let header = header_bytes(kv, tensors);
    f.write_all(&header)?;
    let mut end = header.len() as u64;
    for t in tensors {
        if !t.data.is_empty() {
            f.seek(SeekFrom::Start(end))?;
            f.write_all(&t.data)?;
        }
        end = pad(end + t.nbytes());
    }
    f.set_len(end)
}

/// The header (magic to the padding before the data) of a file of these tensors.
pub fn header_bytes(kv: &[(&str, Value)], tensors: &[WriteTensor]) -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        string(&mut out, k);
        match v {
            Value::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::F32(x) => {
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            Value::Str(s) => {
                out.extend_from_slice(&STRING.to_le_bytes());
                string(&mut out, s);
            }
        }
    }
    let mut offset = 0u64;
    for t in tensors {
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.0.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += pad(t.nbytes());
    }
    out.resize(pad(out.len() as u64) as usize, 0);
    out
}

/// Encodes row-major f64 values in a GGUF type lorascope writes (F32, F16, BF16, Q8_0).
pub fn encode(values: &[f64], ty: GgmlType) -> Vec<u8> {
    match ty {
        GgmlType::Q8_0 => quantize_q8_0(&values.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        GgmlType::F16 => crate::adapter::format::encode(values, Dtype::F16),
        GgmlType::BF16 => crate::adapter::format::encode(values, Dtype::BF16),
        _ => crate::adapter::format::encode(values, Dtype::F32),
    }
}
