//! Tensor data access: each safetensors file is mmapped, tensors are viewed in place (zero-copy
//! when aligned) as ndarray views, sliced per expert, and converted to f64 one factor at a time.

use crate::adapter::gguf::GgmlType;
use crate::adapter::layout::{Factor, Pick};
use crate::adapter::Adapter;
pub use crate::compute::gram::Elem;
pub use crate::compute::math::ColMajor;
use crate::compute::math::FactorR;
use crate::compute::{gram, quant, sigbus};
use crate::error::{Error, Result};
use memmap2::Mmap;
use ndarray::{s, ArrayView2, ArrayView3, Axis};
use safetensors::Dtype;
use std::fs::File;
use std::mem::ManuallyDrop;

/// What identifies a file's content: a rewrite in place changes the size or the mtime.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// One mapped file, with what is needed to notice that it changed (adapters here, base models
/// in `crate::base`).
pub struct MappedFile {
    file: File,
    identity: Identity,
    // Both dropped by hand (`Drop`): the guard unregisters before the map is unmapped.
    guard: ManuallyDrop<sigbus::Guard>,
    map: ManuallyDrop<Mmap>,
}

/// Maps at least this large are unmapped on a thread of their own.
const BACKGROUND_UNMAP_BYTES: usize = 64 << 20;

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: each field is taken once, here, and never used again.
        let (guard, map) = unsafe {
            (
                ManuallyDrop::take(&mut self.guard),
                ManuallyDrop::take(&mut self.map),
            )
        };
        drop(guard);
        // Unmapping is page-table work in the kernel (40 ms for a 0.9 GB adapter) that no
        // result waits for: a thread does it while the caller prints (if no thread can be
        // started, the closure is dropped here and the map with it).
        if map.len() >= BACKGROUND_UNMAP_BYTES {
            let _ = std::thread::Builder::new()
                .name("unmap".into())
                .spawn(move || drop(map));
        }
    }
}

impl MappedFile {
    /// Maps `path`, refusing it when its size is no longer `size` (the size its header was
    /// read at).
    pub fn open(path: &std::path::Path, size: u64) -> Result<MappedFile> {
        let file = crate::adapter::fsread::open_regular(path)?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.len() != size {
            return Err(Error::format(
                path,
                format!(
                    "changed since it was scanned ({} bytes, was {size})",
                    meta.len()
                ),
            ));
        }
        // SAFETY: read-only map of a file whose size was checked against the header. A later
        // truncation cannot kill the process: the map is registered with `sigbus` before any
        // byte of it is read, and every read is checked against the file's identity.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let guard = sigbus::Guard::register(map.as_ptr(), map.len()).ok_or_else(|| {
            Error::Other(format!(
                "cannot read {}: too many files are being read at once",
                path.display()
            ))
        })?;
        Ok(MappedFile {
            file,
            identity: Identity::of(&meta),
            guard: ManuallyDrop::new(guard),
            map: ManuallyDrop::new(map),
        })
    }

    /// Whether the file is still what was mapped: same size, inode and mtime, no faulted read.
    pub fn unchanged(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| Identity::of(&m) == self.identity)
            && !self.guard.faulted()
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The mmapped files of one adapter. Maps live only as long as this value.
///
/// A file truncated or rewritten while it is read (trainers save in place) makes the factors
/// read from it fail with `Error::Changed`; reads past its new end fault into `sigbus`, which
/// turns them into reads of zeros that are then discarded.
pub struct Mapped<'a> {
    adapter: &'a Adapter,
    files: Vec<MappedFile>,
}

impl<'a> Mapped<'a> {
    /// Maps every file, refusing files whose size changed since the headers were read.
    pub fn open(adapter: &'a Adapter) -> Result<Mapped<'a>> {
        let mut files = Vec::with_capacity(adapter.files.len());
        for f in &adapter.files {
            files.push(MappedFile::open(&f.path, f.size)?);
        }
        pause_for_tests();
        Ok(Mapped { adapter, files })
    }

    /// The adapter whose files these are.
    pub fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// Fails with `Error::Changed` when the file behind `tensor` is no longer what was mapped:
    /// another size, inode or mtime, or a read of it faulted past its end.
    fn verify(&self, tensor: usize) -> Result<()> {
        let (t, info) = self.adapter.tensor_file(tensor);
        if self.files[t.file].unchanged() {
            Ok(())
        } else {
            Err(Error::Changed {
                path: info.path.clone(),
            })
        }
    }

    /// Runs `read` on the tensor's bytes between two identity checks: the first avoids reading
    /// a file known to have changed, the second discards what was read while it changed.
    fn checked<R>(&self, tensor: usize, read: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.verify(tensor)?;
        let out = read(self.raw(tensor))?;
        self.verify(tensor)?;
        Ok(out)
    }

    fn raw(&self, tensor: usize) -> &[u8] {
        let (t, f) = self.adapter.tensor_file(tensor);
        let map = &self.files[t.file].map;
        let start = (f.data_start + t.info.begin) as usize;
        let end = (f.data_start + t.info.end) as usize;
        &map[start..end]
    }

    /// The factor's matrix M (A: r×in, B: out×r) returned **transposed** (Mᵀ, column-major):
    /// a row of M is then a contiguous column, so the copy reads the map sequentially.
    pub fn factor_t(&self, f: &Factor) -> Result<ColMajor> {
        self.checked(f.tensor, |raw| self.factor_t_of(f, raw))
    }

    fn factor_t_of(&self, f: &Factor, raw: &[u8]) -> Result<ColMajor> {
        let t = &self.adapter.tensors[f.tensor];
        let (shape, name) = (&t.info.shape, &t.info.name);
        if t.info.quant.is_some() {
            return quant_of(t, |q| q.then(|| quant::factor_t(raw, shape, f, name)));
        }
        with_elem!(t.info.dtype, name, T => {
            let data = typed::<T>(raw);
            Ok(to_mat_t(matrix_of(&data, shape, f, name)?))
        })
    }

    /// R of the thin QR of each factor's tall matrix (Aᵀ for A, B for B): all of them taken
    /// from one tensor, read in place in one pass (`gram`), with no f64 copy of any factor.
    pub fn tall_rs(&self, tensor: usize, factors: &[(Factor, Side)]) -> Result<Vec<FactorR>> {
        let t = &self.adapter.tensors[tensor];
        let (shape, name) = (&t.info.shape, &t.info.name);
        self.checked(tensor, |raw| {
            if t.info.quant.is_some() {
                return quant_of(t, |q| {
                    q.then(|| {
                        factors
                            .iter()
                            .map(|(f, side)| quant::tall_r(raw, shape, f, *side, name))
                            .collect()
                    })
                });
            }
            with_elem!(t.info.dtype, name, T => {
                let data = typed::<T>(raw);
                let talls = factors
                    .iter()
                    .map(|(f, side)| tall_of(&data, shape, f, *side, name))
                    .collect::<Result<Vec<_>>>()?;
                Ok(gram::tall_rs(&talls))
            })
        })
    }

    /// The tall matrix of each factor (Aᵀ for A, B for B) times its X (r × k), all factors
    /// taken from one tensor in one pass, handed to `sink` a block of rows at a time
    /// (`gram::products`: `sink(i0, products)`). The file is checked for changes before the
    /// read and after it: a caller that wrote blocks out must discard them on an error.
    pub fn products(
        &self,
        tensor: usize,
        factors: &[(Factor, Side, faer::MatRef<'_, f64>)],
        sink: impl FnMut(usize, &[faer::MatRef<'_, f64>]) -> Result<()>,
    ) -> Result<()> {
        let t = &self.adapter.tensors[tensor];
        let (shape, name) = (&t.info.shape, &t.info.name);
        self.checked(tensor, |raw| {
            if t.info.quant.is_some() {
                return quant_of(t, |q| {
                    q.then(|| quant::products(raw, shape, factors, name, sink))
                });
            }
            with_elem!(t.info.dtype, name, T => {
                let data = typed::<T>(raw);
                let talls = factors
                    .iter()
                    .map(|(f, side, _)| tall_of(&data, shape, f, *side, name))
                    .collect::<Result<Vec<_>>>()?;
                let xs: Vec<faer::MatRef<'_, f64>> = factors.iter().map(|f| f.2).collect();
                gram::products(&talls, &xs, sink)
            })
        })
    }

    /// A full tensor as f64 values (row-major) and its shape.
    pub fn full_values(&self, tensor: usize) -> Result<Vec<f64>> {
        let t = &self.adapter.tensors[tensor];
        let name = &t.info.name;
        self.checked(tensor, |raw| {
            if t.info.quant.is_some() {
                return quant_of(t, |q| q.then(|| Ok(quant::values(raw))));
            }
            float_values(raw, t.info.dtype, name)
        })
    }
}

/// Runs `read(true)` on a Q8_0 tensor; any other quantisation is refused (the layout step
/// keeps such factors out of every delta: this guards the other callers).
fn quant_of<R>(
    t: &crate::adapter::layout::TensorEntry,
    read: impl FnOnce(bool) -> Option<Result<R>>,
) -> Result<R> {
    let q = t.info.quant.expect("a quantised tensor");
    read(q == GgmlType::Q8_0).unwrap_or_else(|| {
        Err(Error::Shape(format!(
            "tensor '{}' is {}: quantisation not read (lorascope reads Q8_0)",
            t.info.name,
            q.name()
        )))
    })
}

/// The environment variable of the test hook below.
pub const PAUSE_ENV: &str = "LORASCOPE_TEST_PAUSE_AFTER_MAP";

/// Test hook (for the tests of files changing under a computation): with
/// `LORASCOPE_TEST_PAUSE_AFTER_MAP=FILE`, the process's first `Mapped::open` creates FILE once
/// its maps exist and waits (up to 60 s) until FILE is removed, so that a test can truncate the
/// adapter at exactly this point. Unset, it costs one atomic load.
fn pause_for_tests() {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Some(marker) = std::env::var_os(PAUSE_ENV) else {
        return;
    };
    let marker = std::path::PathBuf::from(marker);
    if std::fs::write(&marker, b"mapped").is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Borrows the bytes as `&[T]` when aligned, else copies them (other writers may misalign data).
fn typed<T: Elem>(raw: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice::<u8, T>(raw) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(raw)),
    }
}

fn values<T: Elem>(raw: &[u8]) -> Vec<f64> {
    typed::<T>(raw).iter().map(|x| x.to_f64()).collect()
}

/// Runs `$body` with `$T` bound to the element type of `$dtype`, or fails on other dtypes.
macro_rules! with_elem {
    ($dtype:expr, $name:expr, $T:ident => $body:expr) => {
        match $dtype {
            Dtype::F32 => {
                type $T = f32;
                $body
            }
            Dtype::F64 => {
                type $T = f64;
                $body
            }
            Dtype::F16 => {
                type $T = half::f16;
                $body
            }
            Dtype::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(Error::Shape(format!(
                "tensor '{}' has dtype {other:?}; lorascope computes on F32, F64, F16 and BF16",
                $name
            ))),
        }
    };
}
use with_elem;

/// Whether lorascope reads this dtype's values (the dtypes `float_values` takes).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

/// The values of a float tensor's bytes (or a slice of them) as f64, in order.
pub fn float_values(raw: &[u8], dtype: Dtype, name: &str) -> Result<Vec<f64>> {
    with_elem!(dtype, name, T => Ok(values::<T>(raw)))
}

/// Which factor of a delta a matrix is: A (r × in) is reduced as Aᵀ (in × r), B (out × r) as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The factor's tall matrix (Aᵀ: in×r, B: out×r) viewed in place.
fn tall_of<'a, T: Elem>(
    data: &'a [T],
    shape: &[usize],
    f: &Factor,
    side: Side,
    name: &str,
) -> Result<ArrayView2<'a, T>> {
    let m = matrix_of(data, shape, f, name)?;
    Ok(match side {
        Side::A => m.reversed_axes(),
        Side::B => m,
    })
}

/// The factor's matrix M (A: r×in, B: out×r) viewed in place: its pick of the tensor, then its
/// row selection (`--split-gate-up`).
fn matrix_of<'a, T: Elem>(
    data: &'a [T],
    shape: &[usize],
    f: &Factor,
    name: &str,
) -> Result<ArrayView2<'a, T>> {
    let m = pick_view(data, shape, f.pick, name)?;
    let Some(r) = f.rows else {
        return Ok(m);
    };
    let last = r.start + r.step * r.len.saturating_sub(1);
    if r.len == 0 || last >= m.nrows() {
        return Err(Error::Shape(format!(
            "tensor '{name}' {shape:?}: has no row {last} to split gate and up"
        )));
    }
    Ok(m.slice_move(s![r.start..=last;r.step, ..]))
}

fn pick_view<'a, T: Elem>(
    data: &'a [T],
    shape: &[usize],
    pick: Pick,
    name: &str,
) -> Result<ArrayView2<'a, T>> {
    let bad = |what: &str| Error::Shape(format!("tensor '{name}' {shape:?}: {what}"));
    let view: ArrayView2<T> = match pick {
        Pick::Index { index } | Pick::IndexTransposed { index } => {
            let v3 = ArrayView3::from_shape((shape[0], shape[1], shape[2]), data)
                .map_err(|_| bad("is not 3D"))?;
            if index >= shape[0] {
                return Err(bad(&format!("has no slice {index}")));
            }
            let m = v3.index_axis_move(Axis(0), index);
            return Ok(if matches!(pick, Pick::Index { .. }) {
                m
            } else {
                m.reversed_axes()
            });
        }
        _ => ArrayView2::from_shape((shape[0], shape[1]), data).map_err(|_| bad("is not 2D"))?,
    };
    Ok(match pick {
        Pick::All => view,
        Pick::Transposed => view.reversed_axes(),
        Pick::Rows { start, len } => {
            if start + len > shape[0] {
                return Err(bad(&format!("has no rows {start}..{}", start + len)));
            }
            view.slice_move(s![start..start + len, ..])
        }
        Pick::Cols { start, step, len } => {
            let last = start + step * len.saturating_sub(1);
            if len == 0 || last >= shape[1] {
                return Err(bad(&format!("has no column {last}")));
            }
            view.slice_move(s![.., start..=last;step])
        }
        Pick::Index { .. } | Pick::IndexTransposed { .. } => unreachable!("handled above"),
    })
}

/// Mᵀ in f64: row i of M becomes the contiguous column i, converted in one sequential pass
/// (per-element indexed closures cost a quarter of the whole computation).
pub(crate) fn to_mat_t<T: Elem>(m: ArrayView2<T>) -> ColMajor {
    let (rows, cols) = m.dim();
    let mut data = Vec::with_capacity(rows * cols);
    // x·0 is 0 for finite x and NaN for NaN or ±inf: one multiply-add per element finds them.
    let mut probe = 0.0;
    let mut conv = |s: &T| {
        let x = s.to_f64();
        probe += x * 0.0;
        x
    };
    for row in m.rows() {
        match row.as_slice() {
            Some(src) => data.extend(src.iter().map(&mut conv)),
            None => data.extend(row.iter().map(&mut conv)),
        }
    }
    ColMajor::from_parts(data, cols, rows, probe == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{self, Dims, Pattern, Spec};

    /// The race `verify` cannot close: the file shrinks after the check, before the read. The
    /// read must fault into `sigbus` (zeros, no signal death) and the result must be refused.
    #[test]
    fn a_read_past_a_truncated_end_is_an_error_not_a_sigbus() {
        let dir = tempfile::tempdir().unwrap();
        // Enough data that the last tensor lies whole pages past the truncation point.
        let dims = Dims {
            hidden: 256,
            q_out: 256,
            kv_out: 128,
            ..Dims::TOY
        };
        let mut spec = Spec::new(dims, Pattern::Attention);
        spec.attn_rank = 16;
        synth::write_adapter(dir.path(), &spec).unwrap();
        let src = crate::adapter::discovery::discover_path(dir.path());
        let a = Adapter::load(&src[0], Default::default());
        let m = Mapped::open(&a).unwrap();
        let last = a
            .deltas
            .iter()
            .max_by_key(|d| a.tensors[d.a.tensor].info.begin)
            .unwrap();
        let (t, f) = a.tensor_file(last.a.tensor);
        assert!(f.data_start + t.info.begin > 3 * 65536, "fixture too small");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f.path)
            .unwrap()
            .set_len(f.data_start)
            .unwrap();
        // Read without the check first, as a truncation right after it would.
        let read = m.factor_t_of(&last.a, m.raw(last.a.tensor));
        assert!(read.is_ok(), "the read itself goes on (over zeros)");
        assert!(m.files[t.file].guard.faulted(), "the fault was not seen");
        match m.factor_t(&last.a) {
            Err(Error::Changed { path }) => assert_eq!(path, f.path),
            other => panic!("expected Changed, got {:?}", other.map(|_| ())),
        }
    }
}
