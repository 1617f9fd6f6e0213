//! adapter_model.safetensors, streamed. Its header is laid out before any factor is computed
//! (names, shapes and so offsets follow from the plan and the one rank r); then each output pair
//! (a Linear delta, or a packed parameter over its experts) has its tensors filled from the
//! written factors' blocks of rows (`factors::products`), encoded in the output dtype as they
//! come, and written at their offsets by the worker that computed them. Writing overlaps
//! computing, and neither an image of the file nor an f64 copy of a written factor is held: only
//! the tensors of the pairs being written, in buffers reused from pair to pair.

use super::plan::{Param, Plan, Slot};
use crate::adapter::format::{self, TensorData};
use crate::adapter::Adapter;
use crate::compute::tensor::Side;
use crate::error::{Error, Result};
use faer::MatRef;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where column j of a written factor (B' out × K, or A'ᵀ in × K) goes in a row-major tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    /// To column col0 + j·step; the factor's rows are the tensor's rows (B, PEFT's packed B
    /// column j·E + e, an embedding's `lora_embedding_B` = A'ᵀ).
    Cols { col0: usize, step: usize },
    /// To row row0 + j; the factor's rows are the tensor's columns (A, PEFT's packed A row
    /// e·r + j, an embedding's `lora_embedding_A` = B'ᵀ).
    Rows { row0: usize },
}

/// One tensor of the file: its name, shape and what fills it (member of the pair, factor,
/// place). What no factor fills (ranks below r, experts the source does not adapt) is zero.
#[derive(Debug)]
pub struct Layout {
    name: String,
    shape: [usize; 2],
    fills: Vec<(usize, Side, Place)>,
}

/// The tensors of one output pair (`write::groups`; members are its indices into
/// `plan.deltas`): each Linear delta (and 2-D target parameter) as a pair, each embedding as
/// PEFT's `lora_embedding_A/B`, each packed parameter as PEFT's ParamWrapper pair (A row e·r + j,
/// B column j·E + e, `experts` = E). Every factor is zero-padded to the adapter's one rank `r`.
pub fn layout(a: &Adapter, plan: &Plan, group: &[usize], r: usize) -> Result<Vec<Layout>> {
    let name = |module: &str, side: &str| format!("base_model.model.{module}.{side}.weight");
    let mut out = Vec::new();
    // (module, param) → (member, expert)
    let mut packs: BTreeMap<(&str, Param), Vec<(usize, usize)>> = BTreeMap::new();
    for (m, &i) in group.iter().enumerate() {
        let d = &plan.deltas[i];
        let (o, inn) = d.src.dims(a);
        match &d.slot {
            Slot::Gguf { base, .. } => {
                return Err(Error::Other(format!(
                    "{base}: a GGUF tensor in a PEFT folder"
                )))
            }
            Slot::Linear { module } | Slot::Param { module, .. } => {
                out.push(Layout {
                    name: name(module, "lora_A"),
                    shape: [r, inn],
                    fills: vec![(m, Side::A, Place::Rows { row0: 0 })],
                });
                out.push(Layout {
                    name: name(module, "lora_B"),
                    shape: [o, r],
                    fills: vec![(m, Side::B, Place::Cols { col0: 0, step: 1 })],
                });
            }
            // ΔW (V, H) = B·A; PEFT's is (B_e·A_e)ᵀ = A_eᵀ·B_eᵀ, so A_e = B'ᵀ (r, V) and
            // B_e = A'ᵀ (H, r), named without `.weight` (PEFT keeps them in ParameterDicts).
            Slot::Embedding { module } => {
                let base = format!("base_model.model.{module}");
                out.push(Layout {
                    name: format!("{base}.lora_embedding_A"),
                    shape: [r, o],
                    fills: vec![(m, Side::B, Place::Rows { row0: 0 })],
                });
                out.push(Layout {
                    name: format!("{base}.lora_embedding_B"),
                    shape: [inn, r],
                    fills: vec![(m, Side::A, Place::Cols { col0: 0, step: 1 })],
                });
            }
            Slot::Packed {
                module,
                param,
                expert,
            } => packs
                .entry((module.as_str(), *param))
                .or_default()
                .push((m, *expert)),
        }
    }
    let e_count = plan.experts;
    for ((module, param), members) in &packs {
        let dims = |m: usize| plan.deltas[group[m]].src.dims(a);
        let (o, inn) = dims(members[0].0);
        if members.iter().any(|&(m, _)| dims(m) != (o, inn)) {
            return Err(Error::Shape(format!(
                "{module}.{}: experts of different shapes cannot be packed",
                param.name()
            )));
        }
        if let Some(&(_, e)) = members.iter().find(|&&(_, e)| e >= e_count) {
            return Err(Error::Shape(format!(
                "{module}.{}: expert {e} is outside the {e_count} experts packed",
                param.name()
            )));
        }
        // gate_up is the inner wrapper when down is adapted too (transformers registers it
        // first).
        let down_too = plan.deltas.iter().any(|d| {
            matches!(&d.slot, Slot::Packed { module: m, param: Param::Down, .. } if m.as_str() == *module)
        });
        let prefix = if *param == Param::GateUp && down_too {
            format!("{module}.base_layer")
        } else {
            module.to_string()
        };
        out.push(Layout {
            name: name(&prefix, "lora_A"),
            shape: [e_count * r, inn],
            fills: members
                .iter()
                .map(|&(m, e)| (m, Side::A, Place::Rows { row0: e * r }))
                .collect(),
        });
        out.push(Layout {
            name: name(&prefix, "lora_B"),
            shape: [o, r * e_count],
            fills: members
                .iter()
                .map(|&(m, e)| {
                    let place = Place::Cols {
                        col0: e,
                        step: e_count,
                    };
                    (m, Side::B, place)
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The safetensors file being written: its header is on disk, its tensors are written at their
/// offsets as their pairs are done (in any order, from any thread).
pub struct Weights {
    file: File,
    path: PathBuf,
    dtype: Dtype,
    /// Byte offset of each tensor in the file, by name.
    at: HashMap<String, u64>,
    len: u64,
    /// Buffers of finished pairs, reused (no fresh pages to fault in for every pair).
    spare: Mutex<Vec<Vec<u64>>>,
}

impl Weights {
    /// Creates the file with the header of every tensor of `layouts`, in name order.
    pub fn create(path: &Path, layouts: &[Vec<Layout>], dtype: Dtype) -> Result<Weights> {
        let mut tensors: Vec<TensorData> = layouts
            .iter()
            .flatten()
            .map(|l| TensorData {
                name: l.name.clone(),
                dtype,
                shape: l.shape.to_vec(),
                bytes: None,
            })
            .collect();
        tensors.sort_by(|x, y| x.name.cmp(&y.name));
        if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::Other(format!(
                "two written tensors are named {}",
                w[0].name
            )));
        }
        let version = concat!("lorascope ", env!("CARGO_PKG_VERSION"));
        let (header, total) =
            format::header_bytes(&tensors, &[("format", "pt"), ("writer", version)], true);
        let start = (8 + header.len()) as u64;
        let mut at = HashMap::with_capacity(tensors.len());
        let mut off = start;
        for t in &tensors {
            at.insert(t.name.clone(), off);
            off += t.nbytes() as u64;
        }
        let io = |e| Error::io(path, e);
        let file = File::create_new(path).map_err(io)?;
        let mut head = (header.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&header);
        file.write_all_at(&head, 0).map_err(io)?;
        file.set_len(start + total as u64).map_err(io)?;
        Ok(Weights {
            file,
            path: path.to_path_buf(),
            dtype,
            at,
            len: start + total as u64,
            spare: Mutex::new(Vec::new()),
        })
    }

    /// Zeroed tensors for one pair, to be filled (`Tensors::put`) and written (`Tensors::write`).
    pub fn tensors<'w>(&'w self, layout: &'w [Layout]) -> Tensors<'w> {
        let bufs = layout
            .iter()
            .map(|l| {
                let bytes = (l.shape[0] * l.shape[1] * self.dtype.bitsize()).div_ceil(8);
                let mut v = self.spare.lock().ok().and_then(|mut s| s.pop());
                let mut v = v.take().unwrap_or_default();
                v.clear();
                v.resize(bytes.div_ceil(8), 0);
                v
            })
            .collect();
        Tensors {
            weights: self,
            layout,
            bufs,
        }
    }

    /// Syncs the file; returns its size.
    pub fn finish(self) -> Result<u64> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.len)
    }
}

/// The tensors of one output pair being filled.
pub struct Tensors<'w> {
    weights: &'w Weights,
    layout: &'w [Layout],
    /// Each tensor's bytes (in u64 words: aligned for every dtype).
    bufs: Vec<Vec<u64>>,
}

impl Tensors<'_> {
    /// Rows i0.. of member `member`'s B' or A'ᵀ (h × K), encoded where the layout places them.
    pub fn put(
        &mut self,
        member: usize,
        side: Side,
        i0: usize,
        rows: MatRef<'_, f64>,
    ) -> Result<()> {
        let dtype = self.weights.dtype;
        for (l, buf) in self.layout.iter().zip(&mut self.bufs) {
            for &(m, s, place) in &l.fills {
                if (m, s) != (member, side) {
                    continue;
                }
                let fits = match place {
                    Place::Cols { col0, step } => {
                        i0 + rows.nrows() <= l.shape[0]
                            && (rows.ncols() == 0 || col0 + (rows.ncols() - 1) * step < l.shape[1])
                    }
                    Place::Rows { row0 } => {
                        row0 + rows.ncols() <= l.shape[0] && i0 + rows.nrows() <= l.shape[1]
                    }
                };
                if !fits {
                    return Err(Error::Shape(format!(
                        "{}: a written factor's rows {i0}..{} (rank {}) do not fit its shape {:?}",
                        l.name,
                        i0 + rows.nrows(),
                        rows.ncols(),
                        l.shape
                    )));
                }
                let cols = l.shape[1];
                match dtype {
                    Dtype::F32 => scatter::<f32>(buf, cols, place, i0, rows),
                    Dtype::F16 => scatter::<half::f16>(buf, cols, place, i0, rows),
                    Dtype::BF16 => scatter::<half::bf16>(buf, cols, place, i0, rows),
                    Dtype::F64 => scatter::<f64>(buf, cols, place, i0, rows),
                    other => return Err(Error::Other(format!("cannot write {other:?} values"))),
                }
            }
        }
        Ok(())
    }

    /// Writes the tensors at their offsets and starts their writeback; the buffers are kept for
    /// the next pair.
    pub fn write(self) -> Result<()> {
        let w = self.weights;
        let io = |e| Error::io(&w.path, e);
        for (l, buf) in self.layout.iter().zip(self.bufs) {
            let bytes = (l.shape[0] * l.shape[1] * w.dtype.bitsize()).div_ceil(8);
            let off = w.at[&l.name];
            w.file
                .write_all_at(&bytemuck::cast_slice::<u64, u8>(&buf)[..bytes], off)
                .map_err(io)?;
            start_writeback(&w.file, off, bytes as u64);
            if let Ok(mut s) = w.spare.lock() {
                s.push(buf);
            }
        }
        Ok(())
    }
}

/// Asks the kernel to start writing a range to disk now (no wait), so that the final `fsync`
/// finds most of the file written while the rest was computed.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O (its failure changes nothing:
    // `fsync` writes what is left).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

/// A written element type: the f64 value rounded to nearest, in little-endian order.
trait Store: bytemuck::Pod {
    fn store(x: f64) -> Self;
}
impl Store for f32 {
    fn store(x: f64) -> f32 {
        f32::from_bits((x as f32).to_bits().to_le())
    }
}
impl Store for f64 {
    fn store(x: f64) -> f64 {
        f64::from_bits(x.to_bits().to_le())
    }
}
impl Store for half::f16 {
    fn store(x: f64) -> half::f16 {
        half::f16::from_bits(half::f16::from_f64(x).to_bits().to_le())
    }
}
impl Store for half::bf16 {
    fn store(x: f64) -> half::bf16 {
        half::bf16::from_bits(half::bf16::from_f64(x).to_bits().to_le())
    }
}

/// Encodes `rows` (h × K, rows i0.. of a factor) into the row-major tensor `buf` (`cols`
/// columns) at `place` (checked to fit by the caller).
fn scatter<T: Store>(buf: &mut [u64], cols: usize, place: Place, i0: usize, rows: MatRef<'_, f64>) {
    let buf: &mut [T] = bytemuck::cast_slice_mut(buf);
    let columns: Vec<std::borrow::Cow<'_, [f64]>> = (0..rows.ncols())
        .map(|j| match rows.col(j).try_as_col_major() {
            Some(c) => std::borrow::Cow::Borrowed(c.as_slice()),
            None => std::borrow::Cow::Owned(rows.col(j).iter().copied().collect()),
        })
        .collect();
    match place {
        Place::Cols { col0, step } => {
            for i in 0..rows.nrows() {
                let row = &mut buf[(i0 + i) * cols..];
                for (j, c) in columns.iter().enumerate() {
                    row[col0 + j * step] = T::store(c[i]);
                }
            }
        }
        Place::Rows { row0 } => {
            for (j, c) in columns.iter().enumerate() {
                let dst = &mut buf[(row0 + j) * cols + i0..][..c.len()];
                dst.iter_mut()
                    .zip(c.iter())
                    .for_each(|(d, &x)| *d = T::store(x));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block is encoded where its place says (PEFT's packed B column j·E + e, A row e·r + j),
    /// and one that does not fit the tensor is an error, never a write out of bounds.
    #[test]
    fn blocks_land_at_their_places_and_misfits_are_refused() {
        let path = tempfile::tempdir().unwrap();
        let (e_count, r) = (2, 3);
        let layout = vec![
            Layout {
                name: "b".into(),
                shape: [4, r * e_count],
                fills: vec![(
                    0,
                    Side::B,
                    Place::Cols {
                        col0: 1,
                        step: e_count,
                    },
                )],
            },
            Layout {
                name: "a".into(),
                shape: [e_count * r, 5],
                fills: vec![(0, Side::A, Place::Rows { row0: r })],
            },
        ];
        let file = path.path().join("w.safetensors");
        let w = Weights::create(&file, std::slice::from_ref(&layout), Dtype::F32).unwrap();
        let mut t = w.tensors(&layout);
        // B' rows 2..4 (rank 2): columns 1 and 3.
        let b = faer::Mat::from_fn(2, 2, |i, j| (10 * i + j) as f64 + 1.0);
        t.put(0, Side::B, 2, b.as_ref()).unwrap();
        // A'ᵀ rows 1..3 (columns of A), rank 2: rows 3 and 4 of the packed A.
        let a = faer::Mat::from_fn(2, 2, |i, j| (10 * i + j) as f64 + 100.0);
        t.put(0, Side::A, 1, a.as_ref()).unwrap();
        let too_far = faer::Mat::<f64>::zeros(3, 2);
        assert!(matches!(
            t.put(0, Side::B, 2, too_far.as_ref()),
            Err(Error::Shape(_))
        ));
        let wide = faer::Mat::<f64>::zeros(1, 4);
        assert!(t.put(0, Side::A, 0, wide.as_ref()).is_err());
        t.write().unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f32s =
            |n: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(n).unwrap().data()) };
        let mut want_b = vec![0.0f32; 4 * 6];
        for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            want_b[(2 + i) * 6 + 1 + j * e_count] = (10 * i + j) as f32 + 1.0;
        }
        assert_eq!(f32s("b"), want_b);
        let mut want_a = vec![0.0f32; 6 * 5];
        for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            want_a[(r + j) * 5 + 1 + i] = (10 * i + j) as f32 + 100.0;
        }
        assert_eq!(f32s("a"), want_a);
    }
}
