//! The huggingface_hub cache layout, written: `models--ORG--NAME/{blobs,snapshots,refs}`, each
//! snapshot file a relative symlink into `blobs/`, and the lock of each blob that
//! huggingface_hub takes while it writes one (`.locks/models--ORG--NAME/<etag>.lock`). The one writer used by `fetch`, the demo, the
//! synthetic survey, the tests and the benchmarks (so they all produce what huggingface_hub
//! produces; see `docs/hub.md` for the upstream files this follows). No network code here.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Lower-case hex of `bytes` (blob names, commit ids, sha256 checks).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The sha256 of `bytes` in hex: the name huggingface_hub gives an LFS blob.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha256 of everything `r` reads, in hex (a downloaded file, checked before it is linked).
pub fn sha256_reader(r: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(hex(&h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A 40-hex commit id derived from `seed` (git commit ids have this shape), for synthetic repos.
pub fn commit_id(seed: &str) -> String {
    sha256_hex(seed.as_bytes())[..40].to_string()
}

/// A repo's cache folder as a fetch found it (see [`CacheRepo::before_fetch`]).
#[derive(Debug, Clone)]
pub struct BeforeFetch {
    existed: bool,
    incomplete: Vec<PathBuf>,
}

/// The lock of one blob, held until dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct BlobLock {
    _file: std::fs::File,
}

/// One repo's folder in the hub cache: `models--ORG--NAME/{blobs,snapshots,refs}`.
#[derive(Debug, Clone)]
pub struct CacheRepo {
    pub dir: PathBuf,
}

impl CacheRepo {
    pub fn new(cache_root: &Path, repo: &str) -> CacheRepo {
        let folder = hf_hub::Repo::model(repo.to_string()).folder_name();
        CacheRepo {
            dir: cache_root.join(folder),
        }
    }

    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.blobs().join(etag)
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// huggingface_hub's lock file of blob `etag`: `<cache>/.locks/models--ORG--NAME/<etag>.lock`
    /// (`_hf_hub_download_to_cache_dir` in `src/huggingface_hub/file_download.py`).
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        let root = self.dir.parent().unwrap_or(Path::new("."));
        let folder = self.dir.file_name().unwrap_or_default();
        root.join(".locks")
            .join(folder)
            .join(format!("{etag}.lock"))
    }

    /// Takes the lock of blob `etag` unless someone holds it (then `None`): an exclusive
    /// `flock` on its lock file, the lock huggingface_hub's `filelock` takes, so that neither
    /// tool writes a blob the other is writing. The file is created group-writable (0664) as
    /// huggingface_hub's `WeakFileLock` creates it, and left in place (removing a lock file
    /// someone may be waiting on would let two holders in). Where the file system has no
    /// `flock`, the lock is granted without it (huggingface_hub falls back to a softer lock
    /// there): the check of each finished file still keeps a corrupt blob out.
    pub fn try_lock(&self, etag: &str) -> Result<Option<BlobLock>> {
        let path = self.lock_path(etag);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Non-blocking: a FIFO planted there cannot block the open.
            opts.mode(0o664).custom_flags(libc::O_NONBLOCK);
        }
        let file = opts.open(&path).map_err(|e| Error::io(&path, e))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR)) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(BlobLock { _file: file }))
    }

    /// What the folder holds before a fetch starts, so that a fetch the user cancels can take
    /// back what it added ([`CacheRepo::discard_since`]).
    pub fn before_fetch(&self) -> BeforeFetch {
        BeforeFetch {
            existed: self.dir.exists(),
            incomplete: self.incomplete(),
        }
    }

    /// Removes what a cancelled fetch left since `before`: the `.incomplete` blobs it started,
    /// and the repo folder itself when the fetch made it and no snapshot came of it. Partial
    /// blobs that were there before stay (a cut connection's, kept for a resume), and so do
    /// those another fetch holds the lock of. Best effort.
    pub fn discard_since(&self, before: &BeforeFetch) {
        if !before.existed && !self.dir.join("snapshots").exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        for p in self.incomplete() {
            if before.incomplete.contains(&p) {
                continue;
            }
            let etag = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            if etag.is_some_and(|e| matches!(self.try_lock(&e), Ok(Some(_)))) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    /// The `blobs/*.incomplete` files (downloads in progress or cut).
    fn incomplete(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(self.blobs()) else {
            return vec![];
        };
        rd.filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "incomplete"))
            .collect()
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink (as
    /// huggingface_hub does), replacing an older link in one rename.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot(commit).join(file);
        let parent = link.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let depth = file.matches('/').count() + 2;
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(etag);
        // Unique per process and call: two fetches of the same repo link at the same time.
        let tmp = link.with_file_name(format!(
            ".{}.{}.lorascope-link",
            link.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            unique()
        ));
        symlink_or_copy(&target, &tmp).map_err(|e| Error::io(&tmp, e))?;
        let renamed = std::fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        renamed.map(|()| link)
    }

    /// Makes `blobs/<etag>` with `write` (given the blob's path) and links `file` of snapshot
    /// `commit` to it. Returns the blob's apparent size.
    pub fn put(
        &self,
        commit: &str,
        file: &str,
        etag: &str,
        write: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<u64> {
        let blobs = self.blobs();
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let blob = self.blob(etag);
        write(&blob).map_err(|e| Error::io(&blob, e))?;
        let size = std::fs::metadata(&blob)
            .map_err(|e| Error::io(&blob, e))?
            .len();
        self.link(commit, file, etag)?;
        Ok(size)
    }

    /// Writes `refs/<revision>` = `commit`, atomically.
    pub fn set_ref(&self, revision: &str, commit: &str) -> Result<()> {
        let path = self.dir.join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }
}

/// `PID-N`: a name part no other process, nor another call of this one, uses.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(unix)]
fn symlink_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    let abs = link.parent().unwrap_or(Path::new(".")).join(target);
    std::fs::copy(abs, link).map(|_| ())
}

/// Writes `path` through a temporary file in the same folder and a rename: readers see the old
/// file or the new one, never a part. The temporary name is unique per process and call, so two
/// writers of the same file (two scans at once) do not mix their bytes.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.lorascope-tmp", unique()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e));
    let renamed =
        written.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_ids() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(commit_id("abc"), sha256_hex(b"abc")[..40]);
    }

    /// huggingface_hub's lock file, held by one taker at a time, released when dropped.
    #[test]
    fn blob_locks_exclude_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(tmp.path(), "org/name");
        assert_eq!(
            repo.lock_path("abc"),
            tmp.path().join(".locks/models--org--name/abc.lock")
        );
        let held = repo.try_lock("abc").unwrap().expect("free");
        #[cfg(unix)]
        assert!(repo.try_lock("abc").unwrap().is_none(), "taken twice");
        assert!(repo.try_lock("other").unwrap().is_some());
        drop(held);
        assert!(repo.try_lock("abc").unwrap().is_some());
    }

    /// `put` writes the blob and a relative link that resolves to it from any depth.
    #[cfg(unix)]
    #[test]
    fn put_links_relatively() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(tmp.path(), "org/name");
        assert_eq!(repo.dir, tmp.path().join("models--org--name"));
        for (file, body) in [("a.json", &b"{}"[..]), ("x/y/b.bin", &b"PK"[..])] {
            let etag = sha256_hex(body);
            let n = repo
                .put("c0", file, &etag, |p| std::fs::write(p, body))
                .unwrap();
            assert_eq!(n, body.len() as u64);
            let link = repo.snapshot("c0").join(file);
            let target = std::fs::read_link(&link).unwrap();
            let ups = file.matches('/').count() + 2;
            assert_eq!(
                target,
                Path::new(&"../".repeat(ups)).join("blobs").join(&etag)
            );
            assert_eq!(std::fs::read(&link).unwrap(), body);
        }
        repo.set_ref("main", "c0").unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.dir.join("refs/main")).unwrap(),
            "c0"
        );
    }
}
