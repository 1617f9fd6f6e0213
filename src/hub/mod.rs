//! The Hugging Face Hub over HTTP: repo info, header-only reads of remote safetensors (HTTP Range:
//! 8 bytes, then the header) and `fetch` into the standard cache layout, resumable.
//!
//! hf-hub 0.5 names the cache folders and types the repo-info answer. Its downloader is not used:
//! it has no timeouts, ignores `HF_HUB_CACHE`, and resumes from its own `.sync.part` files instead
//! of huggingface_hub's `blobs/<etag>.incomplete`.

use crate::adapter::config::{self, ConfigStatus};
use crate::adapter::format::{self, Header, TensorInfo};
use crate::adapter::layout::LayoutOptions;
use crate::adapter::{Adapter, FileInfo, Source};
pub use crate::error::HubError;
use crate::error::{Error, Result};
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderName, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE,
};
use reqwest::{Client, Method, Response, StatusCode};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub mod cache;
pub mod discover;
mod download;
pub mod headers;
mod repo;

pub use cache::CacheRepo;
pub use discover::{HubAdapter, HubMeta, SearchQuery, DEFAULT_BASE};
pub use download::fetch;
pub use headers::HeaderCache;
use headers::{RawHeader, RepoRead};
pub use repo::{parse_list, RepoRef};
use repo::{safe_component, safe_rel_path};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// huggingface_hub's `DEFAULT_ETAG_TIMEOUT` and `DEFAULT_DOWNLOAD_TIMEOUT` (`constants.py`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much body a request must bring per timeout window to count as making progress. Bodies no
/// longer than this (JSON, headers) thus have one overall deadline.
pub const PROGRESS_BYTES: u64 = 64 << 10;

/// Largest JSON body accepted (repo info, adapter_config.json).
const MAX_JSON: u64 = 32 << 20;

/// How to reach the Hub. Tests build one per client instead of changing the environment.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer …` (`HF_TOKEN`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: every network operation fails at once.
    pub offline: bool,
    /// Metadata requests (repo info, `HEAD`, configs, safetensors headers) must bring their
    /// answer within this (`HF_HUB_ETAG_TIMEOUT`, in seconds as huggingface_hub reads it).
    pub etag_timeout: Duration,
    /// Downloads must bring [`PROGRESS_BYTES`] (or the rest of the file) within each such
    /// window (`HF_HUB_DOWNLOAD_TIMEOUT`): a stall or a trickle fails, a slow but steady download
    /// goes on.
    pub download_timeout: Duration,
    /// Extra attempts after a transient failure (timeout, cut connection, 5xx, 429).
    pub retries: u32,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
    /// Repos surveyed at once.
    pub concurrency: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            offline: false,
            etag_timeout: DEFAULT_TIMEOUT,
            download_timeout: DEFAULT_TIMEOUT,
            retries: 3,
            backoff: Duration::from_millis(500),
            concurrency: 8,
        }
    }
}

impl HubConfig {
    /// From `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`, `HF_HUB_ETAG_TIMEOUT` and
    /// `HF_HUB_DOWNLOAD_TIMEOUT`, as huggingface_hub reads them.
    pub fn from_env() -> HubConfig {
        HubConfig::from_env_with(|k| std::env::var(k).ok())
    }

    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> HubConfig {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        HubConfig {
            endpoint: get("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            token: get("HF_TOKEN"),
            offline,
            etag_timeout: seconds(get("HF_HUB_ETAG_TIMEOUT")),
            download_timeout: seconds(get("HF_HUB_DOWNLOAD_TIMEOUT")),
            ..HubConfig::default()
        }
    }
}

/// A timeout in seconds from the environment; unset, unparsable or not positive gives the
/// default (huggingface_hub: `_as_int(...) or DEFAULT_...`, so 0 also means the default).
fn seconds(v: Option<String>) -> Duration {
    v.and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

fn transient(e: &Error) -> bool {
    matches!(e, Error::Hub(h) if h.is_transient())
}

fn protocol(url: &str, msg: impl Into<String>) -> Error {
    HubError::Protocol {
        url: url.into(),
        msg: msg.into(),
    }
    .into()
}

fn network(url: &str, msg: impl Into<String>) -> Error {
    HubError::Network {
        url: url.into(),
        msg: msg.into(),
    }
    .into()
}

/// What the repo-info endpoint says about a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoInfo {
    /// The commit the revision resolves to.
    pub sha: String,
    /// Every file of the repo at that commit (relative paths).
    pub files: Vec<String>,
}

/// What a file's `resolve` answer says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileMeta {
    /// Blob name in the cache: `X-Linked-Etag` (LFS: the sha256 of the content), else `ETag`.
    pub etag: String,
    pub size: u64,
    pub commit: Option<String>,
    /// Stored with Git LFS (the etag is then the content's sha256).
    pub lfs: bool,
}

/// Where a `fetch` stands, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct FetchProgress<'a> {
    pub file: &'a str,
    pub file_done: u64,
    pub file_size: u64,
    /// Bytes of all files in place so far (downloaded or already in the cache).
    pub done: u64,
    pub total: u64,
}

/// Called as a fetch advances; must be cheap (it runs after each received chunk).
pub type ProgressFn<'a> = dyn Fn(&FetchProgress) + Send + Sync + 'a;

/// One file a fetch put in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedFile {
    pub name: String,
    pub size: u64,
    pub etag: String,
    /// Already complete in the cache: nothing downloaded.
    pub cached: bool,
}

/// The result of a fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub repo_dir: PathBuf,
    pub snapshot: PathBuf,
    pub commit: String,
    pub files: Vec<FetchedFile>,
    /// Bytes received over the network for file contents.
    pub downloaded: u64,
}

/// Totals of a remote survey, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SurveyStats {
    pub repos: usize,
    pub failed: usize,
    /// Response bytes received (bodies: repo info, configs, headers).
    pub bytes_transferred: u64,
    /// Sizes of the safetensors files the headers describe.
    pub bytes_total: u64,
}

/// A client of one Hub endpoint.
pub struct Hub {
    cfg: HubConfig,
    /// Follows no redirect by itself: [`Hub::send`] does, so that the token goes only to the
    /// endpoint's origin (reqwest keeps it on a same-host scheme downgrade, https → http).
    client: Client,
    /// The endpoint as a URL: the only origin `HF_TOKEN` is sent to.
    origin: Option<reqwest::Url>,
    received: AtomicU64,
    /// Where complete header reads are kept between runs (none: every run reads the Hub).
    headers: Option<HeaderCache>,
}

/// The longest `Retry-After` obeyed; a longer one is waited this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// How many windows of `HF_HUB_ETAG_TIMEOUT` one metadata answer may take in all, however
/// steadily it comes: 60 s at the default. (A body that never ends, 64 KiB per window, was
/// otherwise read up to the 32 MiB cap: 85 minutes.)
pub const METADATA_WINDOWS: u32 = 6;

/// Bounds the time a request may take: each window of `after` (the first one starting before
/// the request is sent) must bring [`PROGRESS_BYTES`] of body or the end of the answer. A
/// metadata request must also end within [`METADATA_WINDOWS`] windows; a download has no end,
/// and its windows span its connections (see `download.rs`).
struct Deadline {
    after: Duration,
    until: tokio::time::Instant,
    got: u64,
    /// When the whole answer must have come (metadata).
    end: Option<tokio::time::Instant>,
    /// Windows that brought [`PROGRESS_BYTES`].
    progress: u64,
}

impl Deadline {
    /// A metadata request's.
    fn new(after: Duration) -> Deadline {
        let mut d = Deadline::download(after);
        d.end = Some(d.until + after * (METADATA_WINDOWS - 1));
        d
    }

    /// A download's: windows without an end.
    fn download(after: Duration) -> Deadline {
        Deadline {
            after,
            until: tokio::time::Instant::now() + after,
            got: 0,
            end: None,
            progress: 0,
        }
    }

    /// Counts received bytes; enough of them opens a new window.
    fn progressed(&mut self, n: u64) {
        self.got += n;
        if self.got >= PROGRESS_BYTES {
            self.got = 0;
            self.progress += 1;
            self.until = tokio::time::Instant::now() + self.after;
        }
    }

    /// The current window has ended.
    fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.until
    }

    /// Opens a new window; what the ended one brought does not count towards it.
    fn renew(&mut self) {
        self.got = 0;
        self.until = tokio::time::Instant::now() + self.after;
    }

    /// Waits `d` with the window's clock stopped (a pause between attempts is not the server's).
    async fn pause(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
        self.until += d;
    }

    /// Runs `fut` until the current window ends (or the whole request's time).
    async fn run<T>(&self, url: &str, fut: impl Future<Output = T>) -> Result<T> {
        let end = self.end.filter(|e| *e < self.until);
        tokio::time::timeout_at(end.unwrap_or(self.until), fut)
            .await
            .map_err(|_| match end {
                Some(_) => HubError::TooSlow {
                    url: url.into(),
                    msg: format!(
                        "the answer did not end within {} s ({METADATA_WINDOWS} × the metadata timeout, HF_HUB_ETAG_TIMEOUT)",
                        (self.after * METADATA_WINDOWS).as_secs_f64()
                    ),
                }
                .into(),
                None => HubError::Timeout {
                    url: url.into(),
                    after: self.after,
                }
                .into(),
            })
    }
}

/// Same scheme, host and port (the port a scheme implies counts as given).
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Hub {
    /// A client; fails at once when offline, so that nothing half-starts.
    pub fn new(cfg: HubConfig, what: &str) -> Result<Hub> {
        if cfg.offline {
            return Err(HubError::Offline(what.into()).into());
        }
        let ua = concat!("lorascope/", env!("CARGO_PKG_VERSION"));
        let client = Client::builder()
            .user_agent(ua)
            .connect_timeout(cfg.etag_timeout.max(cfg.download_timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Other(format!("cannot start an HTTP client: {e}")))?;
        Ok(Hub {
            client,
            origin: reqwest::Url::parse(&cfg.endpoint).ok(),
            received: AtomicU64::new(0),
            headers: None,
            cfg,
        })
    }

    /// Keeps header reads in `cache` and reuses them for commits it already holds.
    pub fn with_header_cache(mut self, cache: Option<HeaderCache>) -> Hub {
        self.headers = cache;
        self
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Response body bytes received so far by this client.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn resolve_url(&self, repo: &RepoRef, commit: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.cfg.endpoint,
            repo.repo,
            url_escape(commit, false),
            url_escape(file, true)
        )
    }

    /// Sends a request and follows redirects (up to [`MAX_REDIRECTS`]) until an answer that is
    /// not one, or one `stop` accepts. The token goes only to the endpoint's origin, on every
    /// hop; `Range` is kept, as the target is the same file.
    async fn send(
        &self,
        method: Method,
        url: &str,
        range: Option<&str>,
        deadline: &Deadline,
        stop: impl Fn(&Response) -> bool,
    ) -> Result<Response> {
        let range: Vec<_> = range.map(|r| (RANGE, r)).into_iter().collect();
        self.send_with(method, url, &range, deadline, stop).await
    }

    /// [`Hub::send`] with any request headers (`Range`, `If-Range`), kept on every hop.
    async fn send_with(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, &str)],
        deadline: &Deadline,
        stop: impl Fn(&Response) -> bool,
    ) -> Result<Response> {
        let mut at = reqwest::Url::parse(url).map_err(|e| network(url, format!("bad URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut rb = self.client.request(method.clone(), at.clone());
            for (name, value) in headers {
                rb = rb.header(name, *value);
            }
            if let Some(t) = &self.cfg.token {
                if self.origin.as_ref().is_some_and(|o| same_origin(o, &at)) {
                    rb = rb.header(AUTHORIZATION, format!("Bearer {t}"));
                }
            }
            let resp = deadline
                .run(at.as_str(), rb.send())
                .await?
                .map_err(|e| network(at.as_str(), describe_reqwest(&e)))?;
            if !resp.status().is_redirection() || stop(&resp) {
                return Ok(resp);
            }
            let Some(loc) = header_str(resp.headers(), LOCATION.as_str()) else {
                return Ok(resp); // check_status reports it
            };
            at = at
                .join(&loc)
                .map_err(|e| protocol(at.as_str(), format!("bad redirect '{loc}': {e}")))?;
        }
        Err(protocol(
            url,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// The next piece of a body, within the request's deadline.
    async fn next_chunk(
        &self,
        url: &str,
        resp: &mut Response,
        deadline: &mut Deadline,
    ) -> Result<Option<impl std::ops::Deref<Target = [u8]>>> {
        let c = deadline
            .run(url, resp.chunk())
            .await?
            .map_err(|e| network(url, describe_reqwest(&e)))?;
        if let Some(c) = &c {
            self.received.fetch_add(c.len() as u64, Ordering::Relaxed);
            deadline.progressed(c.len() as u64);
        }
        Ok(c)
    }

    fn check_status(&self, url: &str, resp: &Response) -> Result<()> {
        if resp.status().is_success() {
            return Ok(());
        }
        Err(HubError::Status {
            url: url.into(),
            status: resp.status().as_u16(),
            with_token: self.cfg.token.is_some(),
            retry_after: retry_after(resp.headers()),
        }
        .into())
    }

    /// Runs `op` again after transient failures, with exponential backoff.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if attempt < self.cfg.retries && transient(&e) => {
                    tokio::time::sleep(self.pause(&e, attempt)).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// How long to wait before attempt `attempt + 1`: the server's `Retry-After` when it gave one
    /// (capped, so that a hostile server cannot park a scan), else exponential backoff.
    fn pause(&self, e: &Error, attempt: u32) -> Duration {
        match e {
            Error::Hub(HubError::Status {
                retry_after: Some(d),
                ..
            }) => (*d).min(MAX_RETRY_AFTER),
            _ => self.cfg.backoff * 2u32.saturating_pow(attempt),
        }
    }

    /// A small whole body (JSON), refusing more than `MAX_JSON` bytes.
    async fn get_small(&self, url: &str) -> Result<Vec<u8>> {
        Ok(self.get_page(url, MAX_JSON).await?.0)
    }

    /// A small whole body of at most `max` bytes (reading stops past it) and the answer's `Link`
    /// header (search pages).
    async fn get_page(&self, url: &str, max: u64) -> Result<(Vec<u8>, Option<String>)> {
        self.retry(|| async {
            let mut dl = Deadline::new(self.cfg.etag_timeout);
            let mut resp = self.send(Method::GET, url, None, &dl, |_| false).await?;
            self.check_status(url, &resp)?;
            let link = header_str(resp.headers(), "link");
            let mut buf = Vec::new();
            while let Some(c) = self.next_chunk(url, &mut resp, &mut dl).await? {
                buf.extend_from_slice(&c);
                if buf.len() as u64 > max {
                    return Err(protocol(
                        url,
                        format!("answer larger than {} MiB", max >> 20),
                    ));
                }
            }
            Ok((buf, link))
        })
        .await
    }

    /// What the repo-info endpoint says about `repo` at its revision.
    pub async fn repo_info(&self, repo: &RepoRef) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.cfg.endpoint,
            repo.repo,
            url_escape(&repo.revision, false)
        );
        let body = self.get_small(&url).await?;
        let info: hf_hub::api::RepoInfo = serde_json::from_slice(&body)
            .map_err(|e| protocol(&url, format!("repo info is not the expected JSON ({e})")))?;
        discover::checked_info(
            &url,
            info.sha,
            info.siblings.into_iter().map(|s| s.rfilename),
        )
    }

    /// Bytes `start..=end` of a file (fewer when the file is shorter) and the file's size.
    /// Reads no more than asked even when the server ignores `Range`: the body is dropped.
    pub async fn read_range(&self, url: &str, start: u64, end: u64) -> Result<(Vec<u8>, u64)> {
        self.retry(|| self.read_range_once(url, start, end)).await
    }

    async fn read_range_once(&self, url: &str, start: u64, end: u64) -> Result<(Vec<u8>, u64)> {
        let range = format!("bytes={start}-{end}");
        let mut dl = Deadline::new(self.cfg.etag_timeout);
        let mut resp = self
            .send(Method::GET, url, Some(&range), &dl, |_| false)
            .await?;
        let (skip, total) = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let (first, last, total) = content_range(resp.headers())
                    .ok_or_else(|| protocol(url, "206 answer without a usable Content-Range"))?;
                if first != start || last < end.min(total.saturating_sub(1)) {
                    return Err(protocol(
                        url,
                        format!("asked for bytes {start}-{end}, got {first}-{last}"),
                    ));
                }
                (0, total)
            }
            StatusCode::OK => {
                let total = header_u64(resp.headers(), CONTENT_LENGTH.as_str())
                    .ok_or_else(|| protocol(url, "Range ignored and no Content-Length"))?;
                (start, total)
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = unsatisfied_total(resp.headers())
                    .ok_or_else(|| protocol(url, "416 answer without the file size"))?;
                return Ok((vec![], total));
            }
            _ => {
                self.check_status(url, &resp)?;
                return Err(protocol(url, format!("unexpected HTTP {}", resp.status())));
            }
        };
        let want = if start >= total {
            0
        } else {
            end.min(total - 1) - start + 1
        };
        let mut buf = Vec::with_capacity(want.min(1 << 20) as usize);
        let mut skipped = 0u64;
        while (buf.len() as u64) < want {
            let Some(c) = self.next_chunk(url, &mut resp, &mut dl).await? else {
                return Err(network(
                    url,
                    format!("connection closed after {} of {want} bytes", buf.len()),
                ));
            };
            let mut c: &[u8] = &c;
            let s = (skip - skipped).min(c.len() as u64) as usize;
            skipped += s as u64;
            c = &c[s..];
            let take = (want - buf.len() as u64).min(c.len() as u64) as usize;
            buf.extend_from_slice(&c[..take]);
        }
        Ok((buf, total))
    }

    /// The validated header of a remote safetensors file: 8 bytes, then exactly the header.
    pub async fn read_header(&self, url: &str) -> Result<Header> {
        self.read_raw_header(url).await?.parse(Path::new(url))
    }

    /// The bytes [`Hub::read_header`] validates: the first 8, and then exactly the header they
    /// announce (nothing more when they announce nonsense: the parse then says why).
    async fn read_raw_header(&self, url: &str) -> Result<RawHeader> {
        let (first, total) = self.read_range(url, 0, 7).await?;
        let mut len8 = [0u8; 8];
        if first.len() == 8 {
            len8.copy_from_slice(&first);
        }
        let json = match format::header_len(Path::new(url), len8, total) {
            Ok(n) if n > 0 => {
                let (json, total2) = self.read_range(url, 8, 8 + n - 1).await?;
                if total2 != total {
                    return Err(protocol(url, "the file changed size between two requests"));
                }
                json
            }
            _ => vec![],
        };
        Ok(RawHeader { len8, total, json })
    }

    /// A file's etag, size and commit from the Hub's own answer to `HEAD`: a redirect that
    /// carries `X-Repo-Commit` (the Hub's answer for an LFS file on a CDN) is read, not followed;
    /// other redirects (e.g. a renamed repo) are.
    pub async fn file_meta(&self, url: &str) -> Result<FileMeta> {
        self.retry(|| async {
            let dl = Deadline::new(self.cfg.etag_timeout);
            let resp = self
                .send(Method::HEAD, url, None, &dl, |r| {
                    r.headers().contains_key("x-repo-commit")
                })
                .await?;
            let at = resp.url().to_string();
            let h = resp.headers();
            if !resp.status().is_redirection() {
                self.check_status(&at, &resp)?;
            }
            let linked = header_str(h, "x-linked-etag");
            let lfs = linked.is_some();
            let etag = linked
                .or_else(|| header_str(h, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .ok_or_else(|| protocol(&at, "no ETag"))?;
            if !safe_component(&etag) {
                return Err(protocol(&at, format!("unusable ETag '{etag}'")));
            }
            let size = header_u64(h, "x-linked-size")
                .or_else(|| header_u64(h, CONTENT_LENGTH.as_str()))
                .ok_or_else(|| protocol(&at, "no file size (X-Linked-Size, Content-Length)"))?;
            Ok(FileMeta {
                etag,
                size,
                commit: header_str(h, "x-repo-commit"),
                lfs,
            })
        })
        .await
    }

    /// Every adapter of a remote repo, from headers read over HTTP (no tensor data).
    pub async fn remote_adapters(
        &self,
        repo: &RepoRef,
        opts: LayoutOptions,
    ) -> Result<Vec<Adapter>> {
        let info = self.repo_info(repo).await?;
        let mut out = self.adapters_at(repo, info, opts).await?;
        if let Some(sub) = &repo.sub {
            let want = repo.adapter_id();
            if !out.iter().any(|a| a.id == want) {
                let ids: Vec<&str> = out.iter().map(|a| a.id.as_str()).collect();
                return Err(Error::UnknownAdapter {
                    id: format!("{}/{sub}", repo.repo),
                    suggestions: crate::adapter::closest(&want, ids.into_iter()),
                });
            }
            out.retain(|a| a.id == want);
        }
        Ok(out)
    }

    /// The adapters of `repo` at the commit `info` names: from the header cache when it holds
    /// that commit, else read (and then kept in the cache when the read was complete).
    pub async fn adapters_at(
        &self,
        repo: &RepoRef,
        info: RepoInfo,
        opts: LayoutOptions,
    ) -> Result<Vec<Adapter>> {
        let cached = self
            .headers
            .as_ref()
            .and_then(|c| c.get(&self.cfg.endpoint, &repo.repo, &info.sha));
        let (read, fresh) = match cached {
            Some(r) if r.info.files == info.files => (r, false),
            _ => (self.read_repo(repo, info).await?, true),
        };
        let (adapters, parsed) = self.build_adapters(repo, &read, opts);
        // Only headers that parsed are kept: junk would fill the cache and be read again anyway.
        if let Some(c) = self.headers.as_ref().filter(|_| fresh && parsed) {
            c.put(&self.cfg.endpoint, &repo.repo, &read);
        }
        Ok(adapters)
    }

    /// Reads every `adapter_config.json` and safetensors header of a repo at `info.sha`. A repo
    /// the token does not open (401, 403) fails as a whole; other failures stay with their file.
    async fn read_repo(&self, repo: &RepoRef, info: RepoInfo) -> Result<RepoRead> {
        let denied = |e: &Error| {
            matches!(
                e,
                Error::Hub(HubError::Status {
                    status: 401 | 403,
                    ..
                })
            )
        };
        let mut configs = std::collections::BTreeMap::new();
        let mut headers = std::collections::BTreeMap::new();
        for folder in adapter_folders(&info.files) {
            if let Some(f) = &folder.config {
                match self.get_small(&self.resolve_url(repo, &info.sha, f)).await {
                    Ok(b) => configs.insert(f.clone(), Ok(b)),
                    Err(e) if denied(&e) => return Err(e),
                    Err(e) => configs.insert(f.clone(), Err(format!("cannot read it: {e}"))),
                };
            }
            for f in &folder.safetensors {
                let r = self
                    .read_raw_header(&self.resolve_url(repo, &info.sha, f))
                    .await;
                let failed = r.is_err();
                match r {
                    Err(e) if denied(&e) => return Err(e),
                    r => headers.insert(f.clone(), r),
                };
                if failed {
                    break; // the folder is an error already; its other files need not be read
                }
            }
        }
        Ok(RepoRead {
            info,
            configs,
            headers,
        })
    }

    /// Adapters from a repo's headers, grouped by folder as discovery groups a snapshot, and
    /// whether every header parsed.
    fn build_adapters(
        &self,
        repo: &RepoRef,
        read: &RepoRead,
        opts: LayoutOptions,
    ) -> (Vec<Adapter>, bool) {
        let RepoRead {
            info,
            configs,
            headers,
        } = read;
        let mut all_parsed = true;
        let tree = format!("{}/{}/tree/{}", self.cfg.endpoint, repo.repo, info.sha);
        let mut out = Vec::new();
        for folder in adapter_folders(&info.files) {
            let join = |base: &str| match folder.sub.as_str() {
                "" => base.to_string(),
                s => format!("{base}/{s}"),
            };
            let config = match folder.config.as_ref().and_then(|f| configs.get(f)) {
                None => ConfigStatus::Missing,
                Some(Ok(bytes)) => match config::parse(bytes) {
                    Ok(c) => ConfigStatus::Ok(c),
                    Err(m) => ConfigStatus::Malformed(m),
                },
                Some(Err(m)) => ConfigStatus::Malformed(m.clone()),
            };
            let urls: Vec<String> = folder
                .safetensors
                .iter()
                .map(|f| self.resolve_url(repo, &info.sha, f))
                .collect();
            let parsed: Result<Vec<Header>> = folder
                .safetensors
                .iter()
                .zip(&urls)
                .map(|(f, u)| match headers.get(f) {
                    Some(Ok(r)) => r.parse(Path::new(u)),
                    // The same message (`describe` is its text); a failed read is never cached.
                    Some(Err(e)) => Err(Error::Other(e.to_string())),
                    None => Err(Error::Other(format!("{u}: not read"))),
                })
                .collect();
            all_parsed &= parsed.is_ok();
            let src = Source {
                history: None,
                id: join(&repo.repo),
                path: PathBuf::from(join(&tree)),
                dir: PathBuf::from(join(&tree)),
                files: urls.iter().map(PathBuf::from).collect(),
                revision: Some(info.sha.clone()),
                problem: None,
                other_files: folder.other_files,
            };
            out.push(Adapter::from_headers(
                &src,
                config,
                parsed,
                opts,
                &no_remote_scalars,
            ));
        }
        (out, all_parsed)
    }

    /// Surveys many repos, `concurrency` at a time; a repo that fails becomes an `error` adapter
    /// and the others go on. Order follows `repos`. `progress` gets the number of repos done.
    pub async fn survey(
        &self,
        repos: &[RepoRef],
        opts: LayoutOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> (Vec<Adapter>, SurveyStats) {
        let before = self.bytes_received();
        let done = AtomicUsize::new(0);
        let results: Vec<(Vec<Adapter>, bool)> = futures::stream::iter(repos)
            .map(|r| {
                let done = &done;
                async move {
                    let out = match self.remote_adapters(r, opts).await {
                        Ok(v) => (v, false),
                        Err(e) => (vec![self.failed(r, &e)], true),
                    };
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    out
                }
            })
            .buffered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        let failed = results.iter().filter(|(_, f)| *f).count();
        let adapters: Vec<Adapter> = results.into_iter().flat_map(|(v, _)| v).collect();
        let stats = SurveyStats {
            repos: repos.len(),
            failed,
            bytes_transferred: self.bytes_received() - before,
            bytes_total: adapters.iter().map(Adapter::bytes).sum(),
        };
        (adapters, stats)
    }

    /// An `error` adapter standing for a repo that could not be read.
    fn failed(&self, repo: &RepoRef, e: &Error) -> Adapter {
        let src = Source {
            history: None,
            id: repo.adapter_id(),
            path: PathBuf::from(format!("{}/{}", self.cfg.endpoint, repo.repo)),
            dir: PathBuf::new(),
            files: vec![],
            revision: Some(repo.revision.clone()),
            problem: Some(e.to_string()),
            other_files: vec![],
        };
        Adapter::from_headers(
            &src,
            ConfigStatus::Missing,
            Ok(vec![]),
            LayoutOptions::default(),
            &no_remote_scalars,
        )
    }
}

/// kohya `.alpha` scalars are not fetched over HTTP (no gpt-oss adapter seen uses them).
fn no_remote_scalars(f: &FileInfo, t: &TensorInfo) -> Result<f64> {
    Err(Error::Other(format!(
        "{}: kohya alpha '{}' is not read over HTTP; `lorascope fetch` the adapter to inspect it",
        f.path.display(),
        t.name
    )))
}

/// The adapter folders of a remote repo's file list, grouped as discovery groups a snapshot.
fn adapter_folders(files: &[String]) -> Vec<crate::adapter::discovery::Folder<String>> {
    let named: Vec<(String, String)> = files.iter().map(|f| (f.clone(), f.clone())).collect();
    crate::adapter::discovery::group_folders(&named)
}

/// Percent-encodes a revision or file path for a URL (a revision's `/` too, as the Hub wants).
fn url_escape(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name).and_then(|v| v.trim().parse().ok())
}

/// `Retry-After` in its delay-seconds form; an HTTP-date gives None (then backoff applies), as in
/// huggingface_hub's `_parse_retry_after`.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header_str(h, "retry-after")
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
}

/// `bytes FIRST-LAST/TOTAL` → (FIRST, LAST, TOTAL).
fn content_range(h: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = header_str(h, CONTENT_RANGE.as_str())?;
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

/// `bytes */TOTAL` of a 416 answer.
fn unsatisfied_total(h: &HeaderMap) -> Option<u64> {
    header_str(h, CONTENT_RANGE.as_str())?
        .trim()
        .strip_prefix("bytes */")?
        .parse()
        .ok()
}

/// reqwest's message with its causes (the top level alone says only "error sending request").
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = HubConfig::from_env_with(env(&[]));
        assert_eq!(
            (c.endpoint.as_str(), c.token.as_deref(), c.offline),
            (DEFAULT_ENDPOINT, None, false)
        );
        let c = HubConfig::from_env_with(env(&[
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_x"),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(
            (c.endpoint.as_str(), c.token.as_deref(), c.offline),
            ("http://127.0.0.1:9", Some("hf_x"), true)
        );
        assert!(!HubConfig::from_env_with(env(&[("HF_HUB_OFFLINE", "0")])).offline);
        let e = Hub::new(c, "testing").err().expect("offline");
        assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
    }

    #[test]
    fn folders_like_discovery() {
        let files: Vec<String> = [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "b/adapter_config.json",
            "b/adapter_model.safetensors",
            "ckpt/adapter_config.json",
            "ckpt/adapter_model.bin",
            ".git/x.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let f = adapter_folders(&files);
        assert_eq!(
            f.iter().map(|f| f.sub.as_str()).collect::<Vec<_>>(),
            ["", "b", "ckpt"]
        );
        assert_eq!(f[1].safetensors, ["b/adapter_model.safetensors"]);
        assert_eq!(f[2].other_files, ["adapter_model.bin"]);
        let none = adapter_folders(&["pytorch_model.bin".to_string(), "x/y.gguf".to_string()]);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].other_files, ["pytorch_model.bin", "x/y.gguf"]);
    }

    #[test]
    fn escapes() {
        assert_eq!(url_escape("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(
            url_escape("sub dir/a#b.safetensors", true),
            "sub%20dir/a%23b.safetensors"
        );
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_RANGE, "bytes 8-99/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((8, 99, 1000)));
        h.insert(CONTENT_RANGE, "bytes */5".parse().unwrap());
        assert_eq!(unsatisfied_total(&h), Some(5));
        assert_eq!(content_range(&h), None);
    }
}
