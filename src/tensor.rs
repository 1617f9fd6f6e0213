//! Tensor data access: each safetensors file is mmapped, tensors are viewed in place (zero-copy
//! when aligned) as ndarray views, sliced per expert, and converted to f64 one factor at a time.

use crate::adapter::Adapter;
use crate::error::{Error, Result};
use crate::layout::{Factor, Pick};
use faer::MatRef;
use memmap2::Mmap;
use ndarray::{s, ArrayView2, ArrayView3, Axis};
use safetensors::Dtype;
use std::fs::File;

/// Element types lorascope computes on.
trait Elem: bytemuck::Pod {
    fn to_f64(self) -> f64;
}
impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}
impl Elem for half::f16 {
    fn to_f64(self) -> f64 {
        half::f16::to_f64(self)
    }
}
impl Elem for half::bf16 {
    fn to_f64(self) -> f64 {
        half::bf16::to_f64(self)
    }
}

/// The mmapped files of one adapter. Maps live only as long as this value.
pub struct Mapped<'a> {
    adapter: &'a Adapter,
    maps: Vec<Mmap>,
}

impl<'a> Mapped<'a> {
    /// Maps every file, refusing files whose size changed since the headers were read (a file
    /// truncated under a live map would raise SIGBUS).
    pub fn open(adapter: &'a Adapter) -> Result<Mapped<'a>> {
        let mut maps = Vec::with_capacity(adapter.files.len());
        for f in &adapter.files {
            let file = File::open(&f.path).map_err(|e| Error::io(&f.path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&f.path, e))?.len();
            if len != f.size {
                return Err(Error::format(
                    &f.path,
                    format!("changed since it was scanned ({len} bytes, was {})", f.size),
                ));
            }
            // SAFETY: the file is opened read-only and its size was checked against the header;
            // hub blobs are immutable once complete.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&f.path, e))?;
            maps.push(map);
        }
        Ok(Mapped { adapter, maps })
    }

    fn raw(&self, tensor: usize) -> &[u8] {
        let (t, f) = self.adapter.tensor_file(tensor);
        let map = &self.maps[t.file];
        let start = (f.data_start + t.info.begin) as usize;
        let end = (f.data_start + t.info.end) as usize;
        &map[start..end]
    }

    /// The factor's matrix M (A: r×in, B: out×r) returned **transposed** (Mᵀ, column-major):
    /// a row of M is then a contiguous column, so the copy reads the map sequentially.
    pub fn factor_t(&self, f: &Factor) -> Result<ColMajor> {
        let t = &self.adapter.tensors[f.tensor];
        let shape = &t.info.shape;
        let raw = self.raw(f.tensor);
        let name = &t.info.name;
        let m = match t.info.dtype {
            Dtype::F32 => pick_t::<f32>(raw, shape, f.pick, name),
            Dtype::F64 => pick_t::<f64>(raw, shape, f.pick, name),
            Dtype::F16 => pick_t::<half::f16>(raw, shape, f.pick, name),
            Dtype::BF16 => pick_t::<half::bf16>(raw, shape, f.pick, name),
            other => Err(Error::Shape(format!(
                "tensor '{name}' has dtype {other:?}; lorascope computes on F32, F64, F16 and BF16"
            ))),
        }?;
        match f.rows {
            None => Ok(m),
            // Rows of M are the contiguous columns of Mᵀ: copied whole.
            Some(r) => {
                let last = r.start + r.step * r.len.saturating_sub(1);
                if r.len == 0 || last >= m.ncols {
                    return Err(Error::Shape(format!(
                        "tensor '{name}' {shape:?}: has no row {last} to split gate and up"
                    )));
                }
                let mut data = Vec::with_capacity(r.len * m.nrows);
                for j in (r.start..=last).step_by(r.step) {
                    data.extend_from_slice(&m.data[j * m.nrows..(j + 1) * m.nrows]);
                }
                Ok(ColMajor {
                    data,
                    nrows: m.nrows,
                    ncols: r.len,
                })
            }
        }
    }

    /// A full tensor as f64 values (row-major) and its shape.
    pub fn full_values(&self, tensor: usize) -> Result<Vec<f64>> {
        let t = &self.adapter.tensors[tensor];
        let raw = self.raw(tensor);
        let name = &t.info.name;
        match t.info.dtype {
            Dtype::F32 => Ok(values::<f32>(raw)),
            Dtype::F64 => Ok(values::<f64>(raw)),
            Dtype::F16 => Ok(values::<half::f16>(raw)),
            Dtype::BF16 => Ok(values::<half::bf16>(raw)),
            other => Err(Error::Shape(format!(
                "tensor '{name}' has dtype {other:?}; lorascope computes on F32, F64, F16 and BF16"
            ))),
        }
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

fn pick_t<T: Elem>(raw: &[u8], shape: &[usize], pick: Pick, name: &str) -> Result<ColMajor> {
    let data = typed::<T>(raw);
    let bad = |what: &str| Error::Shape(format!("tensor '{name}' {shape:?}: {what}"));
    let view: ArrayView2<T> = match pick {
        Pick::Index { index } => {
            let v3 = ArrayView3::from_shape((shape[0], shape[1], shape[2]), &data)
                .map_err(|_| bad("is not 3D"))?;
            if index >= shape[0] {
                return Err(bad(&format!("has no slice {index}")));
            }
            return Ok(to_mat_t(v3.index_axis(Axis(0), index)));
        }
        _ => ArrayView2::from_shape((shape[0], shape[1]), &data).map_err(|_| bad("is not 2D"))?,
    };
    let sliced = match pick {
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
        Pick::Index { .. } => unreachable!("handled above"),
    };
    Ok(to_mat_t(sliced))
}

/// A column-major f64 matrix built without zero-filling (it is written once, in order).
#[derive(Clone)]
pub struct ColMajor {
    data: Vec<f64>,
    nrows: usize,
    ncols: usize,
}

impl ColMajor {
    pub fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.nrows, self.ncols)
    }
    pub fn nrows(&self) -> usize {
        self.nrows
    }
    pub fn ncols(&self) -> usize {
        self.ncols
    }
    /// From a dense faer matrix (tests, benchmarks).
    pub fn from_mat(m: MatRef<'_, f64>) -> ColMajor {
        let mut data = Vec::with_capacity(m.nrows() * m.ncols());
        for j in 0..m.ncols() {
            data.extend((0..m.nrows()).map(|i| m[(i, j)]));
        }
        ColMajor {
            data,
            nrows: m.nrows(),
            ncols: m.ncols(),
        }
    }
}

/// Mᵀ in f64: row i of M becomes the contiguous column i, converted in one sequential pass
/// (per-element indexed closures cost a quarter of the whole computation).
fn to_mat_t<T: Elem>(m: ArrayView2<T>) -> ColMajor {
    let (rows, cols) = m.dim();
    let mut data = Vec::with_capacity(rows * cols);
    for row in m.rows() {
        match row.as_slice() {
            Some(src) => data.extend(src.iter().map(|s| s.to_f64())),
            None => data.extend(row.iter().map(|s| s.to_f64())),
        }
    }
    ColMajor {
        data,
        nrows: cols,
        ncols: rows,
    }
}
