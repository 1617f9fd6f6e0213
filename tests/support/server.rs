//! A small Hub-like HTTP/1.1 server on 127.0.0.1 for the tests: the model search
//! (`/api/models?filter=…&search=…&author=…&limit=…&expand=…`, paged with `Link: <…>; rel="next"`),
//! the repo-info endpoint and `resolve/REV/FILE` (GET and HEAD, with Range, ETag, X-Linked-Etag
//! and X-Repo-Commit, honouring If-Range), gated repos (401 without a token, 403 with one),
//! counters of the bytes and requests it sends and of the most requests in flight at once, and
//! faults: cut a body, answer 404, stall, trickle, redirect, rate-limit (429 + Retry-After), page
//! to another host, drip (a few bytes per connection, then close: [`HubServer::drip`]), change a
//! file after it was served, send a body that never ends, and search pages that loop, never end
//! or are oversized.

use lorascope::hub::cache::{commit_id, sha256_hex};
use lorascope::hub::{self, FetchProgress, HubConfig, RepoRef};
use lorascope::synth::{self, Dims, Pattern, Spec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where a served file's bytes come from.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Arc<Vec<u8>>),
    /// A file on disk (sparse survey files: only the ranges asked for are read).
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ServedFile {
    pub name: String,
    pub body: Body,
    pub size: u64,
    /// LFS files: sha256 of the content (sent as X-Linked-Etag).
    pub etag: String,
    pub lfs: bool,
}

impl ServedFile {
    /// An in-memory file; `.safetensors` are LFS files whose etag is their sha256, as on the Hub.
    pub fn bytes(name: &str, bytes: Vec<u8>) -> ServedFile {
        let etag = sha256_hex(&bytes);
        let lfs = name.ends_with(".safetensors");
        ServedFile {
            name: name.into(),
            size: bytes.len() as u64,
            etag: if lfs { etag } else { etag[..40].to_string() },
            body: Body::Bytes(Arc::new(bytes)),
            lfs,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServedRepo {
    pub id: String,
    pub sha: String,
    pub files: Vec<ServedFile>,
    /// Listed by the search under `filter=base_model:adapter:BASE`.
    pub base: Option<String>,
    pub downloads: u64,
    pub likes: u64,
    /// Files answer 401 without a token and 403 with one (access not granted).
    pub gated: bool,
}

impl ServedRepo {
    pub fn new(id: &str, files: Vec<ServedFile>) -> ServedRepo {
        ServedRepo {
            id: id.into(),
            sha: commit_id(id),
            files,
            base: None,
            downloads: 0,
            likes: 0,
            gated: false,
        }
    }

    /// The same repo listed as an adapter of `base`.
    pub fn with_base(mut self, base: &str) -> ServedRepo {
        self.base = Some(base.into());
        self
    }
}

/// Serves every repo of a hub cache (refs/main → snapshot; etag = blob name).
pub fn repos_from_cache(root: &Path) -> Vec<ServedRepo> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let Some(id) = lorascope::adapter::discovery::repo_id_from_folder(
            &d.file_name().unwrap().to_string_lossy(),
        ) else {
            continue;
        };
        let sha = std::fs::read_to_string(d.join("refs/main"))
            .unwrap()
            .trim()
            .to_string();
        let snap = d.join("snapshots").join(&sha);
        let mut files = Vec::new();
        walk(&snap, "", &mut files);
        out.push(ServedRepo {
            sha,
            files,
            ..ServedRepo::new(&id, vec![])
        });
    }
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<ServedFile>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = format!("{prefix}{}", p.file_name().unwrap().to_string_lossy());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, &format!("{name}/"), out);
            continue;
        }
        let etag = std::fs::read_link(&p)
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.push(ServedFile {
            size: std::fs::metadata(&p).unwrap().len(),
            lfs: name.ends_with(".safetensors"),
            body: Body::File(p.canonicalize().unwrap()),
            name,
            etag,
        });
    }
}

/// Faults applied to requests whose path contains the given text.
#[derive(Debug, Default)]
pub struct Faults {
    /// Send this many body bytes, then close the connection; for the next `times` GETs.
    pub cut: Option<(String, u64, usize)>,
    pub not_found: Vec<String>,
    /// Send the head and this many body bytes, then hold the connection silently.
    pub stall: Option<(String, u64)>,
    /// Send the body this many bytes at a time, pausing this long after each piece.
    pub trickle: Option<(String, u64, Duration)>,
    /// Answer `302 Found` with `Location: BASE + path` (no Hub headers), e.g. to another server.
    pub redirect: Option<(String, String)>,
    /// Answer `429` with `Retry-After: SECS` to the next `times` requests whose path contains the
    /// text: (text, times, secs).
    pub rate_limit: Option<(String, usize, u64)>,
    /// Search `next` links point at this base URL (e.g. another server) instead of this one.
    pub next_base: Option<String>,
    /// After the next GET of a file whose path contains the text is answered (cut or not), the
    /// file takes these bytes: a new version, with a new ETag, as a server that changed it.
    pub change_after_get: Option<(String, Vec<u8>)>,
    /// Answer `200` with a body that never ends: this many bytes (JSON whitespace) at a time,
    /// pausing this long after each piece, until the client hangs up.
    pub endless: Option<(String, u64, Duration)>,
    /// Search pages that never end (issue 22), see [`SearchFaults`].
    pub search: SearchFaults,
}

/// Hostile model-search answers.
#[derive(Debug, Default, Clone)]
pub struct SearchFaults {
    /// The last page's `next` link points back at the page before it: two pages that loop.
    pub looping: bool,
    /// Every page has a `next` link to a new cursor and the results wrap around: pages that
    /// never end and never repeat.
    pub endless: bool,
    /// Each page is padded with this many bytes of JSON whitespace (an oversized page).
    pub pad: usize,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
    pub if_range: Option<String>,
}

#[derive(Default)]
struct State {
    endpoint: String,
    repos: std::sync::RwLock<BTreeMap<String, Arc<ServedRepo>>>,
    /// Largest search page served (the Hub caps `limit` too).
    page_max: AtomicUsize,
    /// Requests being answered now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    faults: Mutex<Faults>,
    seen: Mutex<Vec<Seen>>,
    /// Body bytes sent, total and per path.
    body: AtomicU64,
    per_path: Mutex<BTreeMap<String, u64>>,
    /// Everything written to sockets (heads included).
    total: AtomicU64,
}

pub struct HubServer {
    pub endpoint: String,
    state: Arc<State>,
}

impl HubServer {
    /// Starts on 127.0.0.1 on its own thread and runtime; it lives as long as the test process.
    pub fn start(repos: Vec<ServedRepo>) -> HubServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = std_listener.local_addr().unwrap();
        let state = Arc::new(State {
            endpoint: format!("http://{addr}"),
            repos: std::sync::RwLock::new(
                repos
                    .into_iter()
                    .map(|r| (r.id.clone(), Arc::new(r)))
                    .collect(),
            ),
            page_max: AtomicUsize::new(1000),
            ..State::default()
        });
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let _ = handle(sock, st).await;
                    });
                    // (`handle` counts itself in and out of `active`.)
                }
            });
        });
        HubServer {
            endpoint: format!("http://{addr}"),
            state,
        }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.state.faults.lock().unwrap()
    }

    pub fn body_bytes(&self) -> u64 {
        self.state.body.load(Ordering::SeqCst)
    }

    pub fn total_bytes(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Body bytes sent for paths containing `part`.
    pub fn body_bytes_for(&self, part: &str) -> u64 {
        self.state
            .per_path
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Replaces (or adds) a repo, e.g. a new commit.
    pub fn set_repo(&self, repo: ServedRepo) {
        self.state
            .repos
            .write()
            .unwrap()
            .insert(repo.id.clone(), Arc::new(repo));
    }

    /// A dripping server: every GET of a path containing `part` sends at most `bytes` of the body,
    /// then closes the connection (a [`Faults::cut`] without end).
    pub fn drip(&self, part: &str, bytes: u64) {
        self.faults().cut = Some((part.into(), bytes, usize::MAX));
    }

    /// Search pages hold at most `n` repos.
    pub fn set_page_max(&self, n: usize) {
        self.state.page_max.store(n.max(1), Ordering::SeqCst);
    }

    /// The most requests that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_active.load(Ordering::SeqCst)
    }

    /// Requests seen whose path contains `part`.
    pub fn requests_for(&self, part: &str) -> usize {
        self.seen().iter().filter(|s| s.path.contains(part)).count()
    }

    pub fn reset_counters(&self) {
        self.state.max_active.store(0, Ordering::SeqCst);
        self.state.body.store(0, Ordering::SeqCst);
        self.state.total.store(0, Ordering::SeqCst);
        self.state.per_path.lock().unwrap().clear();
        self.state.seen.lock().unwrap().clear();
    }
}

/// Counts a request in flight from its first byte to its last, for [`HubServer::max_in_flight`].
struct InFlight(Arc<State>);

impl InFlight {
    fn new(st: &Arc<State>) -> InFlight {
        let now = st.active.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_active.fetch_max(now, Ordering::SeqCst);
        InFlight(st.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(mut sock: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 || buf.len() > 65536 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        range: header("range"),
        auth: header("authorization"),
        if_range: header("if-range"),
    };
    st.seen.lock().unwrap().push(seen.clone());
    let _in_flight = InFlight::new(&st);
    let limited = {
        let mut f = st.faults.lock().unwrap();
        match f.rate_limit.as_mut() {
            Some((p, times, secs)) if *times > 0 && path.contains(p.as_str()) => {
                *times -= 1;
                Some(*secs)
            }
            _ => None,
        }
    };
    if let Some(secs) = limited {
        let headers = vec![("Retry-After".to_string(), secs.to_string())];
        return respond(
            &mut sock,
            &st,
            &path,
            "429 Too Many Requests",
            headers,
            vec![],
        )
        .await;
    }
    let endless = st
        .faults
        .lock()
        .unwrap()
        .endless
        .clone()
        .filter(|(p, _, _)| path.contains(p.as_str()));
    if let Some((_, piece, pause)) = endless {
        return send_endless(&mut sock, &st, piece, pause).await;
    }
    if path == "/api/models" || path.starts_with("/api/models?") {
        let (status, headers, body) = search(&st, &path);
        return respond(&mut sock, &st, &path, status, headers, body).await;
    }
    let gated_id = path
        .trim_start_matches('/')
        .trim_start_matches("api/models/")
        .split('/')
        .take(2)
        .collect::<Vec<_>>()
        .join("/");
    if st
        .repos
        .read()
        .unwrap()
        .get(&gated_id)
        .is_some_and(|r| r.gated)
    {
        let status = if seen.auth.is_some() {
            "403 Forbidden"
        } else {
            "401 Unauthorized"
        };
        return respond(&mut sock, &st, &path, status, vec![], Vec::new()).await;
    }
    let redirect = st
        .faults
        .lock()
        .unwrap()
        .redirect
        .as_ref()
        .filter(|(p, _)| path.contains(p.as_str()))
        .map(|(_, base)| format!("{base}{path}"));
    if let Some(location) = redirect {
        let headers = vec![("Location".to_string(), location)];
        return respond(&mut sock, &st, &path, "302 Found", headers, Vec::new()).await;
    }
    if st
        .faults
        .lock()
        .unwrap()
        .not_found
        .iter()
        .any(|p| path.contains(p.as_str()))
    {
        return respond(&mut sock, &st, &path, "404 Not Found", vec![], Vec::new()).await;
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.split_once("/revision/") else {
            return respond(&mut sock, &st, &path, "404 Not Found", vec![], Vec::new()).await;
        };
        let rev = rev.replace("%2F", "/");
        let repo = st.repos.read().unwrap().get(id).cloned();
        return match repo.filter(|r| rev == "main" || rev == r.sha) {
            Some(r) => {
                let siblings: Vec<_> = r
                    .files
                    .iter()
                    .map(|f| serde_json::json!({"rfilename": f.name}))
                    .collect();
                let body = serde_json::to_vec(
                    &serde_json::json!({"id": r.id, "sha": r.sha, "siblings": siblings}),
                )
                .unwrap();
                respond(
                    &mut sock,
                    &st,
                    &path,
                    "200 OK",
                    vec![("Content-Type".into(), "application/json".into())],
                    body,
                )
                .await
            }
            None => respond(&mut sock, &st, &path, "404 Not Found", vec![], Vec::new()).await,
        };
    }
    let Some((id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return respond(&mut sock, &st, &path, "404 Not Found", vec![], Vec::new()).await;
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    let rev = rev.replace("%2F", "/");
    let repo = st.repos.read().unwrap().get(id).cloned();
    let Some((repo, f)) = repo
        .filter(|r| rev == "main" || rev == r.sha)
        .and_then(|r| {
            let f = r.files.iter().find(|f| f.name == file)?.clone();
            Some((r, f))
        })
    else {
        return respond(&mut sock, &st, &path, "404 Not Found", vec![], Vec::new()).await;
    };
    let mut headers = vec![
        ("Accept-Ranges".to_string(), "bytes".to_string()),
        ("X-Repo-Commit".into(), repo.sha.clone()),
    ];
    if f.lfs {
        // As on the Hub: ETag names the git pointer file, X-Linked-Etag the LFS content.
        headers.push((
            "ETag".into(),
            format!("\"git-{}\"", &f.etag[..8.min(f.etag.len())]),
        ));
        headers.push(("X-Linked-Etag".into(), format!("\"{}\"", f.etag)));
        headers.push(("X-Linked-Size".into(), f.size.to_string()));
    } else {
        headers.push(("ETag".into(), format!("\"{}\"", f.etag)));
    }
    // If-Range: the range only while the file still has the ETag the client names, else all
    // of it (RFC 9110 §13.1.5).
    let etag_now = headers
        .iter()
        .find(|(k, _)| k == "ETag")
        .map(|(_, v)| v.clone());
    let range = seen
        .range
        .as_deref()
        .filter(|_| seen.if_range.is_none() || seen.if_range == etag_now);
    let (status, start, len) = match range.and_then(|r| parse_range(r, f.size)) {
        Some(Ok((a, b))) => {
            headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{}", f.size)));
            ("206 Partial Content", a, b - a + 1)
        }
        Some(Err(())) => {
            headers.push(("Content-Range".into(), format!("bytes */{}", f.size)));
            return respond(
                &mut sock,
                &st,
                &path,
                "416 Range Not Satisfiable",
                headers,
                Vec::new(),
            )
            .await;
        }
        None => ("200 OK", 0, f.size),
    };
    headers.push(("Content-Length".into(), len.to_string()));
    write_head(&mut sock, &st, status, &headers).await?;
    if method == "HEAD" {
        return Ok(());
    }
    let mut src = match &f.body {
        Body::Bytes(b) => Src::Mem(b),
        Body::File(p) => {
            let mut fh = tokio::fs::File::open(p).await?;
            fh.seek(std::io::SeekFrom::Start(start)).await?;
            Src::File(fh)
        }
    };
    let sent = send_body(&mut sock, &st, &path, start, len, &mut src).await;
    change_after_get(&st, &path, &repo, &f);
    sent
}

/// Applies [`Faults::change_after_get`] to the file just served.
fn change_after_get(st: &State, path: &str, repo: &ServedRepo, f: &ServedFile) {
    let bytes = {
        let mut fl = st.faults.lock().unwrap();
        match &fl.change_after_get {
            Some((p, _)) if path.contains(p.as_str()) => fl.change_after_get.take().map(|c| c.1),
            _ => None,
        }
    };
    let Some(bytes) = bytes else { return };
    let mut new = repo.clone();
    for file in new.files.iter_mut().filter(|x| x.name == f.name) {
        *file = ServedFile::bytes(&f.name, bytes.clone());
    }
    st.repos
        .write()
        .unwrap()
        .insert(new.id.clone(), Arc::new(new));
}

/// [`Faults::endless`]: a `200` whose body never ends (no Content-Length; `Connection: close`).
async fn send_endless(
    sock: &mut TcpStream,
    st: &State,
    piece: u64,
    pause: Duration,
) -> std::io::Result<()> {
    let headers = [("Content-Type".to_string(), "application/json".to_string())];
    write_head(sock, st, "200 OK", &headers).await?;
    let bytes = vec![b' '; piece.max(1) as usize];
    loop {
        sock.write_all(&bytes).await?; // fails once the client has hung up
        sock.flush().await?;
        st.body.fetch_add(piece, Ordering::SeqCst);
        tokio::time::sleep(pause).await;
    }
}

/// The model search: repos matching every `filter` tag (`base_model:adapter:BASE`), `search`
/// (in the id) and `author`, `limit` per page (capped by the page maximum), an opaque-looking
/// `cursor` (the offset), a `next` link while more remain, and only the `expand`ed fields.
fn search(st: &State, path: &str) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    let url = reqwest::Url::parse(&format!("http://h{path}")).unwrap();
    let mut filters = vec![];
    let mut expand = vec![];
    let (mut text, mut author, mut limit, mut cursor) = (None, None, None, 0usize);
    for (k, v) in url.query_pairs() {
        match &*k {
            "filter" => filters.push(v.into_owned()),
            "expand" => expand.push(v.into_owned()),
            "search" => text = Some(v.to_lowercase()),
            "author" => author = Some(v.into_owned()),
            "limit" => limit = v.parse::<usize>().ok(),
            "cursor" => cursor = v.trim_start_matches('c').parse().unwrap_or(0),
            _ => {}
        }
    }
    let repos = st.repos.read().unwrap();
    let matching: Vec<&Arc<ServedRepo>> = repos
        .values()
        .filter(|r| {
            filters.iter().all(|f| {
                r.base
                    .as_ref()
                    .is_some_and(|b| *f == format!("base_model:adapter:{b}"))
            })
        })
        .filter(|r| {
            text.as_ref()
                .is_none_or(|t| r.id.to_lowercase().contains(t))
        })
        .filter(|r| {
            author
                .as_ref()
                .is_none_or(|a| r.id.split('/').next() == Some(a.as_str()))
        })
        .collect();
    let page = limit
        .unwrap_or(1000)
        .min(st.page_max.load(Ordering::SeqCst))
        .max(1);
    let has = |e: &str| expand.iter().any(|x| x == e);
    let hostile = st.faults.lock().unwrap().search.clone();
    // Endless pages wrap around the results (none when nothing matches).
    let listed: Box<dyn Iterator<Item = &&Arc<ServedRepo>>> = if hostile.endless {
        let skip = cursor % matching.len().max(1);
        Box::new(matching.iter().cycle().skip(skip).take(page))
    } else {
        Box::new(matching.iter().skip(cursor).take(page))
    };
    let items: Vec<serde_json::Value> = listed
        .map(|r| {
            let mut o = serde_json::json!({"_id": commit_id(&r.id)[..24], "id": r.id});
            let m = o.as_object_mut().unwrap();
            if has("sha") {
                m.insert("sha".into(), r.sha.clone().into());
            }
            if has("siblings") {
                let s: Vec<_> = r
                    .files
                    .iter()
                    .map(|f| serde_json::json!({"rfilename": f.name}))
                    .collect();
                m.insert("siblings".into(), s.into());
            }
            if has("downloads") {
                m.insert("downloads".into(), r.downloads.into());
            }
            if has("likes") {
                m.insert("likes".into(), r.likes.into());
            }
            if has("lastModified") {
                m.insert("lastModified".into(), "2025-08-10T12:00:00.000Z".into());
            }
            if has("gated") {
                let g = if r.gated {
                    "manual".into()
                } else {
                    false.into()
                };
                m.insert("gated".into(), g);
            }
            o
        })
        .collect();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let next_cursor = if hostile.endless || cursor + page < matching.len() {
        Some(cursor + page)
    } else if hostile.looping && cursor >= page {
        Some(cursor - page)
    } else {
        None
    };
    if let Some(next_cursor) = next_cursor {
        let base = st
            .faults
            .lock()
            .unwrap()
            .next_base
            .clone()
            .unwrap_or_else(|| st.endpoint.clone());
        let mut next = url.clone();
        next.query_pairs_mut()
            .clear()
            .extend_pairs(url.query_pairs().filter(|(k, _)| k != "cursor"))
            .append_pair("cursor", &format!("c{next_cursor}"));
        let rel = format!("{}?{}", next.path(), next.query().unwrap_or(""));
        // Absolute, as the Hub sends it.
        headers.push(("Link".into(), format!("<{base}{rel}>; rel=\"next\"")));
    }
    let mut body = serde_json::to_vec(&items).unwrap();
    if hostile.pad > 0 {
        // After the `[`: whitespace a JSON reader must read through.
        body.splice(1..1, std::iter::repeat_n(b' ', hostile.pad));
    }
    ("200 OK", headers, body)
}

/// A body being sent: memory, or a file already positioned at the start of the range.
enum Src<'a> {
    Mem(&'a [u8]),
    File(tokio::fs::File),
}

impl Src<'_> {
    async fn read(&mut self, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Src::Mem(b) => Ok(b[at as usize..at as usize + n].to_vec()),
            Src::File(f) => {
                let mut v = vec![0u8; n];
                f.read_exact(&mut v).await?;
                Ok(v)
            }
        }
    }
}

/// Sends bytes `start..start+len` of `src`, applying the cut and stall faults.
async fn send_body(
    sock: &mut TcpStream,
    st: &State,
    path: &str,
    start: u64,
    len: u64,
    src: &mut Src<'_>,
) -> std::io::Result<()> {
    let (limit, stall, trickle) = {
        let mut fl = st.faults.lock().unwrap();
        let mut limit = len;
        let mut stall = false;
        if let Some((p, after, times)) = fl.cut.as_mut() {
            if path.contains(p.as_str()) && *times > 0 {
                *times -= 1;
                limit = limit.min(*after);
            }
        }
        if let Some((p, after)) = &fl.stall {
            if path.contains(p.as_str()) {
                limit = limit.min(*after);
                stall = true;
            }
        }
        let trickle = fl
            .trickle
            .as_ref()
            .filter(|(p, _, _)| path.contains(p.as_str()))
            .map(|(_, n, pause)| (*n, *pause));
        (limit, stall, trickle)
    };
    let mut sent = 0u64;
    while sent < limit {
        let n = (limit - sent).min(trickle.map_or(16384, |t| t.0.max(1))) as usize;
        let bytes = src.read(start + sent, n).await?;
        // Counted before the write: a client may read the bytes (and a test ask for the count)
        // before this task runs again; taken back if the write fails.
        let count = |delta: i64| {
            let add = |c: &AtomicU64| c.fetch_add(delta as u64, Ordering::SeqCst);
            add(&st.body);
            add(&st.total);
            let mut per = st.per_path.lock().unwrap();
            let e = per.entry(path.to_string()).or_default();
            *e = e.wrapping_add(delta as u64);
        };
        count(n as i64);
        if let Err(e) = sock.write_all(&bytes).await {
            count(-(n as i64));
            return Err(e);
        }
        sent += n as u64;
        if let Some((_, pause)) = trickle {
            sock.flush().await?;
            tokio::time::sleep(pause).await;
        }
    }
    sock.flush().await?;
    if stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    Ok(()) // dropping the socket closes it: a cut when limit < len
}

/// `bytes=A-B` or `bytes=A-` → Ok((A, B)) within the file; Err when not satisfiable.
fn parse_range(r: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        b.parse().ok()?
    };
    if a >= size {
        return Some(Err(()));
    }
    Some(Ok((a, b.min(size - 1))))
}

async fn write_head(
    sock: &mut TcpStream,
    st: &State,
    status: &str,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    st.total.fetch_add(head.len() as u64, Ordering::SeqCst);
    Ok(())
}

async fn respond(
    sock: &mut TcpStream,
    st: &State,
    path: &str,
    status: &str,
    mut headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> std::io::Result<()> {
    headers.push(("Content-Length".into(), body.len().to_string()));
    write_head(sock, st, status, &headers).await?;
    send_body(sock, st, path, 0, body.len() as u64, &mut Src::Mem(&body)).await
}

/// A client configuration for `server`: short timeouts and backoff so that failures are quick.
pub fn config(server: &HubServer) -> lorascope::hub::HubConfig {
    lorascope::hub::HubConfig {
        endpoint: server.endpoint.clone(),
        token: None,
        offline: false,
        etag_timeout: Duration::from_secs(10),
        download_timeout: Duration::from_secs(10),
        retries: 0,
        backoff: Duration::from_millis(10),
        concurrency: 8,
    }
}

/// Big enough that a cut lands mid-body (~420 kB of f32), small enough to be quick.
pub const DIMS: Dims = Dims {
    layers: 4,
    hidden: 256,
    q_out: 256,
    kv_out: 64,
    experts: 4,
    inter: 128,
};

/// An adapter's two files with real (non-sparse) data.
pub fn adapter_files(prefix: &str, rank: usize) -> Vec<ServedFile> {
    let mut s = Spec::new(DIMS, Pattern::Attention);
    s.attn_rank = rank;
    let g = synth::generate(&s);
    vec![
        ServedFile::bytes(
            &format!("{prefix}adapter_model.safetensors"),
            synth::safetensors_bytes(&g.tensors, true),
        ),
        ServedFile::bytes(
            &format!("{prefix}adapter_config.json"),
            serde_json::to_vec_pretty(&g.config).unwrap(),
        ),
    ]
}

/// org/adapter: root and `b/` adapters plus a README that fetch must skip.
pub fn two_adapter_repo() -> ServedRepo {
    let mut files = adapter_files("", 16);
    files.extend(adapter_files("b/", 8));
    files.push(ServedFile::bytes("README.md", b"# a model card\n".to_vec()));
    ServedRepo::new("org/adapter", files)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn fetch(cfg: HubConfig, cache: &Path, repo: &str) -> lorascope::Result<hub::Fetched> {
    let repo: RepoRef = repo.parse().unwrap();
    rt().block_on(hub::fetch(cfg, cache, &repo, &|_: &FetchProgress| {}))
}
