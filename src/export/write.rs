//! The written folder: its tensors in PEFT's names and packing, its config and model card, and
//! the rules that keep writing safe: never inside a hub cache, never over the source, a
//! non-empty `--out` only with `--force`, everything written into a hidden folder beside `--out`
//! and moved into place whole (a kill or a full disk leaves `--out` as it was).

use super::plan::{Param, Plan, Slot};
use super::{ExportError, Options};
use crate::adapter::Adapter;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// The folders export never writes into: the hub cache in use, the one huggingface_hub's
/// environment names, `HF_HOME`, and lorascope's own cache folder (demo, header cache).
pub fn protected_roots(cache: Option<&Path>) -> Vec<PathBuf> {
    let env = |k: &str| std::env::var(k).ok();
    let mut roots: Vec<PathBuf> = cache.map(Path::to_path_buf).into_iter().collect();
    roots.extend(crate::adapter::discovery::cache_root_with(env));
    roots.extend(env("HF_HOME").filter(|v| !v.is_empty()).map(PathBuf::from));
    roots.extend(crate::adapter::catalog::own_cache_dir());
    roots
}

/// `p` made absolute with its links resolved as far as it exists (the rest appended, `..`
/// folded), so that comparisons see where a write would really land.
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for c in rest.into_iter().rev() {
        match Path::new(&c).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => out.push(c),
        }
    }
    out
}

/// Refuses an `--out` (folder or file) inside a protected folder, or inside or around the
/// source.
pub fn check_place(out: &Path, source: &Adapter, protected: &[PathBuf]) -> Result<()> {
    let refuse = |why: String| -> Error {
        ExportError::Out {
            out: out.to_path_buf(),
            why,
        }
        .into()
    };
    let target = resolved(out);
    for root in protected {
        let root = resolved(root);
        if target.starts_with(&root) {
            return Err(refuse(format!(
                "it is inside the cache {} (lorascope only reads caches)",
                root.display()
            )));
        }
    }
    let src = resolved(&source.path);
    let src_dir = if source.path.is_file() {
        src.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        src.clone()
    };
    if target.starts_with(&src_dir) || src.starts_with(&target) {
        return Err(refuse(format!(
            "it would hold or overlap the source {}",
            source.path.display()
        )));
    }
    Ok(())
}

/// Refuses an `--out` inside a protected folder, inside or around the source, that is not a
/// folder, or that is a non-empty folder without `force`.
pub fn check_out(out: &Path, source: &Adapter, protected: &[PathBuf], force: bool) -> Result<()> {
    let refuse = |why: String| -> Error {
        ExportError::Out {
            out: out.to_path_buf(),
            why,
        }
        .into()
    };
    check_place(out, source, protected)?;
    match std::fs::symlink_metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => Err(refuse("it exists and is not a folder".into())),
        Ok(_) => {
            let empty = std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .next()
                .is_none();
            if empty || force {
                Ok(())
            } else {
                Err(refuse(
                    "it is not empty (pass --force to replace it)".into(),
                ))
            }
        }
    }
}

/// The plan's deltas by output pair: each Linear delta alone, each packed parameter (module,
/// param) with all its experts; indices into `plan.deltas`.
pub fn groups(plan: &Plan) -> Vec<Vec<usize>> {
    let mut packs: BTreeMap<(&str, Param), Vec<usize>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, d) in plan.deltas.iter().enumerate() {
        match &d.slot {
            Slot::Packed { module, param, .. } => {
                packs.entry((module.as_str(), *param)).or_default().push(i)
            }
            _ => out.push(vec![i]),
        }
    }
    out.extend(packs.into_values());
    out
}

/// adapter_config.json: one r, `lora_alpha = r` (the scale is in the factors), no patterns;
/// modules named in full, so that PEFT wraps exactly what the source adapts.
pub fn config(a: &Adapter, plan: &Plan, r: usize) -> Vec<u8> {
    let mut modules: Vec<&str> = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for d in &plan.deltas {
        match &d.slot {
            Slot::Linear { module } | Slot::Embedding { module } => modules.push(module),
            Slot::Param { module, param } => params.push(format!("{module}.{param}")),
            Slot::Packed { module, param, .. } => params.push(format!("{module}.{}", param.name())),
            Slot::Gguf { .. } => {}
        }
    }
    modules.sort_unstable();
    modules.dedup();
    // Within a layer gate_up comes first: the order transformers registers them, which PEFT
    // nests by (and lorascope's reader follows the config's order).
    params.sort_by(|x, y| {
        let key = |s: &str| {
            (
                s.rsplit_once('.').map(|(m, _)| m.to_string()),
                !s.ends_with("gate_up_proj"),
            )
        };
        key(x).cmp(&key(y))
    });
    params.dedup();
    let mut cfg = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": a.base_model(),
        "r": r,
        "lora_alpha": r,
        "use_rslora": false,
        "lora_dropout": 0.0,
        "bias": "none",
        "lora_bias": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": modules,
    });
    if !params.is_empty() {
        cfg["target_parameters"] = serde_json::json!(params);
    }
    let mut bytes = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// README.md: the model card front matter PEFT writes, and how the adapter was made.
pub fn card(a: &Adapter, opts: &Options, r: usize) -> Vec<u8> {
    let base = a.base_model();
    let mut s = String::from("---\n");
    if let Some(b) = &base {
        s += &format!("base_model: {b}\n");
    }
    s += "library_name: peft\ntags:\n- lora\n- lorascope-export\n";
    if let Some(b) = &base {
        s += &format!("- base_model:adapter:{b}\n");
    }
    s += "---\n\n";
    s += &format!(
        "LoRA adapter exported by lorascope {} from `{}` for {} (rank {r}, scale folded into the \
         factors: lora_alpha = r).\n",
        env!("CARGO_PKG_VERSION"),
        a.id,
        opts.engine.as_str()
    );
    s += "\ngpt-oss experts, if any, are PEFT `target_parameters` pairs with lora_A on the input \
          side: load with PEFT 0.17-0.18, or PEFT >= 0.19.1 on a transformers whose \
          GptOssExperts sets is_transposed. A gpt-oss router LoRA, if any, is the 2-D target \
          parameter `mlp.router.weight` (written for PEFT only).\n";
    s.into_bytes()
}

/// A hidden folder beside `--out` that becomes `--out` on `commit`, and is removed otherwise.
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn new(out: &Path) -> Result<Staging> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(
            ".{name}.lorascope-export-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a file of the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes and syncs a small file of the folder; returns the bytes written.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<u64> {
        let path = self.path(name);
        let mut file = std::fs::File::create_new(&path).map_err(|e| Error::io(&path, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        Ok(bytes.len() as u64)
    }

    /// Moves the folder into place: a rename, or with `force` over an existing `--out`, an
    /// atomic exchange (Linux) after which the old folder is removed.
    pub fn commit(mut self, force: bool) -> Result<()> {
        let exists = std::fs::symlink_metadata(&self.out).is_ok();
        if exists && !force {
            // Checked before; something made it since.
            let empty = std::fs::read_dir(&self.out).map(|mut d| d.next().is_none());
            if !matches!(empty, Ok(true)) {
                return Err(ExportError::Out {
                    out: self.out.clone(),
                    why: "it appeared while the export ran".into(),
                }
                .into());
            }
        }
        if exists {
            exchange(&self.dir, &self.out)?;
            // `dir` now holds what `--out` held; Drop removes it.
        } else {
            std::fs::rename(&self.dir, &self.out).map_err(|e| Error::io(&self.out, e))?;
            self.committed = true;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Other(format!("{}: a NUL in the path", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(b, std::io::Error::last_os_error()))
    }
}

/// Elsewhere: the old folder is moved aside, then the new one in (a crash between the two leaves
/// the old one aside, never lost).
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let aside = a.with_extension("old");
    std::fs::rename(b, &aside).map_err(|e| Error::io(b, e))?;
    std::fs::rename(a, b).map_err(|e| Error::io(b, e))?;
    std::fs::rename(&aside, a).map_err(|e| Error::io(a, e))
}

/// Tests kill an export here, after the files are written and before they are moved into place
/// (`LORASCOPE_TEST_PAUSE_BEFORE_COMMIT` = milliseconds).
pub(super) fn pause_for_tests() {
    if let Some(ms) = std::env::var("LORASCOPE_TEST_PAUSE_BEFORE_COMMIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
