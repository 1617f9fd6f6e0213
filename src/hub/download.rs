//! `fetch`: a repo's adapter files into the hub cache, as huggingface_hub writes them.
//!
//! One blob at a time, under huggingface_hub's lock of that blob (`CacheRepo::try_lock`), into
//! `blobs/<etag>.incomplete`, resumed with `Range` and `If-Range`, checked on disk and renamed.
//! A download's deadline spans its connections, so that a server cannot keep it alive by
//! sending a little on each new one (see `docs/reliability.md`, the Hub).

use super::cache::{sha256_reader, BlobLock};
use super::{
    file_name, header_str, network, protocol, transient, CacheRepo, Deadline, FetchProgress,
    Fetched, FetchedFile, FileMeta, Hub, HubConfig, HubError, ProgressFn, RepoRef, PROGRESS_BYTES,
};
use crate::error::{Error, Result};
use reqwest::header::{ETAG, IF_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How often a fetch waiting for another one's lock on a blob tries again (as huggingface_hub's
/// `filelock` polls).
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Downloads a repo's adapter files into the cache (see [`Hub::fetch`]); the entry point for
/// callers without a client of their own (the explorer).
pub async fn fetch(
    cfg: HubConfig,
    cache_root: &Path,
    repo: &RepoRef,
    progress: &ProgressFn<'_>,
) -> Result<Fetched> {
    Hub::new(cfg, "fetching an adapter")?
        .fetch(cache_root, repo, progress)
        .await
}

impl Hub {
    /// Downloads `adapter_config.json` and every `*.safetensors` of a repo into the cache.
    ///
    /// Each file is downloaded under its blob's lock to `blobs/<etag>.incomplete` (resumed with
    /// `Range` after a cut, here or in a later run), checked on disk (size; sha256 for LFS
    /// files), and renamed into `blobs/<etag>`. Only when every file is complete are the
    /// snapshot links and then `refs/<revision>` written: the cache never points at a partial
    /// file.
    pub async fn fetch(
        &self,
        cache_root: &Path,
        repo: &RepoRef,
        progress: &ProgressFn<'_>,
    ) -> Result<Fetched> {
        let info = self.repo_info(repo).await?;
        let wanted: Vec<&String> = info
            .files
            .iter()
            .filter(|f| f.ends_with(".safetensors") || file_name(f) == "adapter_config.json")
            .filter(|f| {
                repo.sub
                    .as_ref()
                    .is_none_or(|s| f.starts_with(&format!("{s}/")))
            })
            .collect();
        if wanted.is_empty() {
            return Err(protocol(
                &format!("{}/{}", self.cfg.endpoint, repo.repo),
                format!(
                    "{repo} has no adapter_config.json or .safetensors file at {}",
                    info.sha
                ),
            ));
        }
        let mut metas = Vec::with_capacity(wanted.len());
        for f in &wanted {
            let url = self.resolve_url(repo, &info.sha, f);
            let m = self.file_meta(&url).await?;
            if m.commit.as_deref().is_some_and(|c| c != info.sha) {
                return Err(protocol(
                    &url,
                    format!("served from commit {:?}, expected {}", m.commit, info.sha),
                ));
            }
            metas.push((url, m));
        }
        let cache = CacheRepo::new(cache_root, &repo.repo);
        let blobs = cache.blobs();
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| Error::io(&blobs, e))?;
        let total: u64 = metas.iter().map(|(_, m)| m.size).sum();
        let mut done = 0u64;
        let mut downloaded = 0u64;
        let mut files = Vec::with_capacity(wanted.len());
        for (name, (url, m)) in wanted.iter().zip(&metas) {
            let report = |file_done: u64| {
                progress(&FetchProgress {
                    file: name,
                    file_done,
                    file_size: m.size,
                    done: done + file_done,
                    total,
                })
            };
            let got = self.download_blob(url, m, &cache, &report).await?;
            report(m.size);
            downloaded += got;
            done += m.size;
            files.push(FetchedFile {
                name: name.to_string(),
                size: m.size,
                etag: m.etag.clone(),
                cached: got == 0 && m.size > 0,
            });
        }
        for f in &files {
            cache.link(&info.sha, &f.name, &f.etag)?;
        }
        if repo.revision != info.sha {
            cache.set_ref(&repo.revision, &info.sha)?;
        }
        Ok(Fetched {
            snapshot: cache.snapshot(&info.sha),
            repo_dir: cache.dir,
            commit: info.sha,
            files,
            downloaded,
        })
    }

    /// Makes `blobs/<etag>` hold the file at `url`; returns the bytes downloaded (0 when it was
    /// there already, or another fetch put it there while this one waited for the lock).
    ///
    /// Retries: each failure costs one, and a window that brings [`PROGRESS_BYTES`] gives them
    /// all back. The windows span connections (a new one does not open a new window) and stop
    /// during the pauses between attempts; a window that ends without its 64 KiB costs an
    /// attempt and the next one starts afresh.
    async fn download_blob(
        &self,
        url: &str,
        m: &FileMeta,
        cache: &CacheRepo,
        report: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let blob = cache.blob(&m.etag);
        let complete = || async {
            tokio::fs::metadata(&blob)
                .await
                .is_ok_and(|md| md.is_file() && md.len() == m.size)
        };
        if complete().await {
            return Ok(0);
        }
        let _lock = lock(cache, &m.etag).await?;
        if complete().await {
            return Ok(0); // another fetch finished it while this one waited
        }
        let mut p = Partial::open(blob.with_file_name(format!("{}.incomplete", m.etag)), m).await?;
        let mut dl = Deadline::download(self.cfg.download_timeout);
        let (mut attempt, mut windows, mut slow_from) = (0, 0, 0);
        while p.have < p.size {
            let Err(e) = self.download_range(url, &mut p, &mut dl, report).await else {
                continue;
            };
            // Keep what arrived: the next attempt (or run) resumes from it.
            p.flush().await?;
            if dl.progress > windows {
                // 64 KiB in a window: a flaky connection, not a dead one.
                (attempt, windows, slow_from) = (0, dl.progress, p.received - dl.got);
            }
            if !transient(&e) {
                return Err(e);
            }
            if attempt >= self.cfg.retries {
                let slow = p.received - slow_from;
                return Err(if attempt > 0 && slow > 0 {
                    too_slow(url, attempt + 1, slow, self.cfg.download_timeout, &e)
                } else {
                    e
                });
            }
            if dl.expired() {
                dl.renew(); // that window brought too little; the next attempt gets a new one
            }
            dl.pause(self.pause(&e, attempt)).await;
            attempt += 1;
        }
        p.finish(url, m, &blob).await
    }

    /// One request for the rest of the file, appended to the partial download. A resume names
    /// the version it holds (`If-Range`); when the server has another one, the download starts
    /// again from zero, so that a file is never half one version and half another.
    async fn download_range(
        &self,
        url: &str,
        p: &mut Partial,
        dl: &mut Deadline,
        report: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let range = format!("bytes={}-", p.have);
        let mut headers = vec![(RANGE, range.as_str())];
        if let Some(v) = p.validator.as_deref().filter(|_| p.have > 0) {
            headers.push((IF_RANGE, v));
        }
        let mut resp = self
            .send_with(Method::GET, url, &headers, dl, |_| false)
            .await?;
        // Only a strong ETag can name a version in If-Range (RFC 9110 §13.1.5).
        let etag = header_str(resp.headers(), ETAG.as_str()).filter(|e| !e.starts_with("W/"));
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let first = super::content_range(resp.headers()).map(|(f, _, _)| f);
                if first != Some(p.have) {
                    return Err(protocol(
                        url,
                        format!("asked for byte {}, got {first:?}", p.have),
                    ));
                }
                if p.have > 0 && etag.is_some() && p.validator.is_some() && etag != p.validator {
                    // The rest of another version (a server that ignores If-Range).
                    return p.restart().await;
                }
            }
            // The server ignored Range, or If-Range found another version: all of it.
            StatusCode::OK => p.restart().await?,
            _ => {
                self.check_status(url, &resp)?;
                return Err(protocol(url, format!("unexpected HTTP {}", resp.status())));
            }
        }
        if p.have == 0 {
            p.validator = etag;
        }
        while let Some(c) = self.next_chunk(url, &mut resp, dl).await? {
            if p.have + c.len() as u64 > p.size {
                return Err(protocol(
                    url,
                    format!("more than the announced {} bytes", p.size),
                ));
            }
            p.append(&c).await?;
            report(p.have);
        }
        if p.have < p.size {
            return Err(network(
                url,
                format!("connection closed at byte {} of {}", p.have, p.size),
            ));
        }
        Ok(())
    }
}

/// Waits for the lock of blob `etag` (another fetch, of lorascope or huggingface_hub, is
/// downloading it). The holder's own deadlines bound the wait.
async fn lock(cache: &CacheRepo, etag: &str) -> Result<BlobLock> {
    loop {
        if let Some(l) = cache.try_lock(etag)? {
            return Ok(l);
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// The failure of a download whose last attempts all brought some bytes, but never 64 KiB in a
/// window: a server that drips.
fn too_slow(url: &str, attempts: u32, bytes: u64, window: Duration, last: &Error) -> Error {
    let last = last.to_string();
    HubError::TooSlow {
        url: url.into(),
        msg: format!(
            "{attempts} attempts in a row brought {bytes} bytes, never {} KiB within {} s \
             (HF_HUB_DOWNLOAD_TIMEOUT); the last one: {}; what arrived is kept for a resume",
            PROGRESS_BYTES >> 10,
            window.as_secs_f64(),
            last.strip_prefix(&format!("{url}: ")).unwrap_or(&last)
        ),
    }
    .into()
}

/// A download in progress: `blobs/<etag>.incomplete`, how much it holds, and the ETag of the
/// answer its bytes came from.
struct Partial {
    file: tokio::fs::File,
    path: PathBuf,
    have: u64,
    size: u64,
    /// Bytes received in this run.
    received: u64,
    /// The version the bytes held are of, sent as `If-Range` on a resume: the ETag of the
    /// answer that brought them; for a file left by an earlier run, the Hub's ETag of a file
    /// not in LFS (it serves such files under it). An LFS file left by an earlier run has none
    /// (its CDN's ETag is not known): its sha256 checks it.
    validator: Option<String>,
}

impl Partial {
    /// Opens (or creates) the partial file.
    async fn open(path: PathBuf, m: &FileMeta) -> Result<Partial> {
        let io = |e| Error::io(&path, e);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .await
            .map_err(io)?;
        let have = file.metadata().await.map_err(io)?.len();
        let mut p = Partial {
            file,
            have,
            size: m.size,
            received: 0,
            validator: (!m.lfs).then(|| format!("\"{}\"", m.etag)),
            path,
        };
        if p.have > p.size {
            p.restart().await?;
        }
        Ok(p)
    }

    async fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .await
            .map_err(|e| Error::io(&self.path, e))?;
        self.have = 0;
        self.validator = None;
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(&self.path, e))?;
        self.have += bytes.len() as u64;
        self.received += bytes.len() as u64;
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .await
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Syncs, checks the file itself (its size; the sha256 of its content for an LFS file,
    /// whose etag is that hash) and renames it into `blob`; returns the bytes received in this
    /// run. A file that fails the check is deleted.
    async fn finish(self, url: &str, m: &FileMeta, blob: &Path) -> Result<u64> {
        let io = |e| Error::io(&self.path, e);
        let mut file = self.file;
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        let mut file = file.into_std().await;
        let hash = m.lfs && m.etag.len() == 64;
        let checked = tokio::task::spawn_blocking(move || {
            let len = file.metadata()?.len();
            let sha = if hash {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(0))?;
                Some(sha256_reader(&mut file)?)
            } else {
                None
            };
            Ok::<_, std::io::Error>((len, sha))
        })
        .await
        .map_err(|e| Error::Other(format!("checking {}: {e}", self.path.display())))?;
        let (len, sha) = checked.map_err(io)?;
        let wrong = if len != m.size {
            Some(format!(
                "the downloaded file has {len} bytes, the Hub says {}",
                m.size
            ))
        } else {
            sha.filter(|s| *s != m.etag).map(|s| {
                format!(
                    "the downloaded file has sha256 {s}, the Hub says {}",
                    m.etag
                )
            })
        };
        if let Some(msg) = wrong {
            let _ = tokio::fs::remove_file(&self.path).await;
            return Err(protocol(url, format!("{msg}: discarded, run again")));
        }
        tokio::fs::rename(&self.path, blob)
            .await
            .map_err(|e| Error::io(blob, e))?;
        Ok(self.received)
    }
}
