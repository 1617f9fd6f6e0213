//! Issue 14, the Hub client and the cache walk: the token stays with the endpoint, every request
//! has a deadline, and the cache walk opens only regular files, follows no folder links and
//! never leaves the cache. Issue 22, `fetch`: one writer per blob, no spliced resume, no server
//! that drips forever, no metadata answer that never ends. Hub tests run against the loopback server in `support::server`; cache tests
//! build caches with `support`. Anything that hung before runs under a guard, so a regression
//! fails instead of hanging.

mod support;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::hub::{self, Hub, HubError, RepoRef};
use lorascope::synth::{Dims, Pattern, Spec};
use lorascope::{Error, Kind};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::server::{config, fetch, rt, two_adapter_repo, HubServer};

const TOKEN: &str = "hf_secret_test_token";

/// Runs `f` on its own thread and fails the test if it takes longer than `secs`: a regression
/// that hangs (a FIFO, a trickle) then fails rather than blocking the suite.
fn guard<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s (hung)"))
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Hub(HubError::Timeout { .. }))
}

#[test]
fn the_token_goes_only_to_the_endpoints_origin() {
    let repo = two_adapter_repo();
    // The same files on another port of the same host: a different origin.
    let elsewhere = HubServer::start(vec![repo.clone()]);
    let server = HubServer::start(vec![repo.clone()]);
    server.faults().redirect = Some(("/resolve/".into(), elsewhere.endpoint.clone()));
    let mut cfg = config(&server);
    cfg.token = Some(TOKEN.into());

    // fetch: HEAD (file metadata) and GET with `Range: bytes=0-` (download), both redirected.
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg.clone();
    let root = tmp.path().to_path_buf();
    let done = guard(60, "fetch", move || fetch(c, &root, "org/adapter")).unwrap();
    assert_eq!(done.files.len(), 4);
    // Remote inspection: a plain GET (adapter_config.json) and Range reads of the headers.
    let c = cfg.clone();
    let remote = guard(60, "remote_adapters", move || {
        let hub = Hub::new(c, "test").unwrap();
        let r: RepoRef = "org/adapter".parse().unwrap();
        rt().block_on(hub.remote_adapters(&r, LayoutOptions::default()))
    })
    .unwrap();
    assert_eq!(remote.len(), 2);
    assert!(remote.iter().all(|a| a.kind == Kind::Lora), "{remote:?}");

    let there = elsewhere.seen();
    for (method, range) in [
        ("HEAD", None),
        ("GET", Some("bytes=0-")),
        ("GET", Some("bytes=0-7")),
        ("GET", None),
    ] {
        assert!(
            there
                .iter()
                .any(|s| s.method == method && s.range.as_deref() == range),
            "the redirect target never got {method} {range:?}: {there:?}"
        );
    }
    let leaked: Vec<_> = there.iter().filter(|s| s.auth.is_some()).collect();
    assert!(
        leaked.is_empty(),
        "token sent to another origin: {leaked:?}"
    );
    let here = server.seen();
    assert!(here.iter().any(|s| s.path.contains("/resolve/")));
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        here.iter()
            .all(|s| s.auth.as_deref() == Some(bearer.as_str())),
        "the endpoint itself must get the token: {here:?}"
    );
}

#[test]
fn timeouts_come_from_the_environment_as_huggingface_hub_reads_them() {
    let env = |k: &str| match k {
        "HF_HUB_ETAG_TIMEOUT" => Some("3".to_string()),
        "HF_HUB_DOWNLOAD_TIMEOUT" => Some("0.5".to_string()),
        _ => None,
    };
    let c = hub::HubConfig::from_env_with(env);
    assert_eq!(c.etag_timeout, Duration::from_secs(3));
    assert_eq!(c.download_timeout, Duration::from_millis(500));
    // Unset, zero or junk: huggingface_hub's default of 10 s.
    for v in [None, Some("0"), Some("soon")] {
        let c = hub::HubConfig::from_env_with(|_| v.map(String::from));
        assert_eq!(
            (c.etag_timeout, c.download_timeout),
            (hub::DEFAULT_TIMEOUT, hub::DEFAULT_TIMEOUT)
        );
    }
    assert_eq!(hub::DEFAULT_TIMEOUT, Duration::from_secs(10));
}

#[test]
fn a_trickling_metadata_answer_hits_the_overall_deadline() {
    let server = HubServer::start(vec![two_adapter_repo()]);
    // One byte every 50 ms: the repo info (~300 bytes) would take ~15 s; each byte is well
    // within any per-chunk timeout.
    server.faults().trickle = Some(("/api/models/".into(), 1, Duration::from_millis(50)));
    let mut cfg = config(&server);
    cfg.etag_timeout = Duration::from_millis(300);
    let err = guard(6, "repo info", move || {
        let hub = Hub::new(cfg, "test").unwrap();
        let r: RepoRef = "org/adapter".parse().unwrap();
        rt().block_on(hub.repo_info(&r))
    })
    .unwrap_err();
    assert!(is_timeout(&err), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn a_trickling_download_fails_and_keeps_what_arrived() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    server.faults().trickle = Some((
        "adapter_model.safetensors".into(),
        1,
        Duration::from_millis(20),
    ));
    let mut cfg = config(&server);
    cfg.download_timeout = Duration::from_millis(300);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let err = guard(6, "fetch", move || fetch(cfg, &root, "org/adapter")).unwrap_err();
    assert!(is_timeout(&err), "{err}");
    let part = tmp
        .path()
        .join("models--org--adapter/blobs")
        .join(format!("{}.incomplete", repo.files[0].etag));
    let kept = std::fs::metadata(part).unwrap().len();
    assert!(kept > 0 && kept < repo.files[0].size, "{kept}");
}

#[test]
fn a_slow_download_that_keeps_making_progress_is_not_cut() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    // 64 KiB every 150 ms: the ~420 kB file takes about 1 s, far beyond the 400 ms window, but
    // each window brings enough.
    let piece = hub::PROGRESS_BYTES;
    server.faults().trickle = Some((
        "adapter_model.safetensors".into(),
        piece,
        Duration::from_millis(150),
    ));
    let mut cfg = config(&server);
    cfg.download_timeout = Duration::from_millis(400);
    assert!(repo.files[0].size > 4 * piece);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let done = guard(60, "fetch", move || fetch(cfg, &root, "org/adapter")).unwrap();
    let adapter_files = repo.files.iter().filter(|f| f.name != "README.md");
    assert_eq!(done.downloaded, adapter_files.map(|f| f.size).sum::<u64>());
}

// --- fetch under attack (issue 22) ---------------------------------------------------------

fn served(f: &support::server::ServedFile) -> Vec<u8> {
    match &f.body {
        support::server::Body::Bytes(b) => b.to_vec(),
        support::server::Body::File(p) => std::fs::read(p).unwrap(),
    }
}

#[test]
fn two_fetches_of_the_same_repo_at_once_leave_correct_blobs() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    // ~1 s per safetensors file, so that the two downloads overlap.
    server.faults().trickle = Some((
        "adapter_model.safetensors".into(),
        8 << 10,
        Duration::from_millis(20),
    ));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().to_str().unwrap().to_string();
    let endpoint = server.endpoint.clone();
    let outs = guard(60, "two fetches", move || {
        let start = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
                .args(["fetch", "org/adapter", "--cache", &cache])
                .env("HF_ENDPOINT", &endpoint)
                .env_remove("HF_TOKEN")
                .env_remove("HF_HUB_OFFLINE")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(), start());
        [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()]
    });
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let dir = tmp.path().join("models--org--adapter");
    let snap = dir.join("snapshots").join(&repo.sha);
    for f in repo.files.iter().filter(|f| f.name != "README.md") {
        let got = std::fs::read(snap.join(&f.name)).unwrap();
        assert!(
            got == served(f),
            "{}: {} bytes behind the link",
            f.name,
            got.len()
        );
        // huggingface_hub's lock file of that blob.
        let lock = tmp
            .path()
            .join(".locks/models--org--adapter")
            .join(format!("{}.lock", f.etag));
        assert!(lock.is_file(), "{}", lock.display());
    }
    // The second fetch waited for the first one's lock and found the blob: one download.
    let path = format!("resolve/{}/adapter_model.safetensors", repo.sha);
    assert_eq!(server.body_bytes_for(&path), repo.files[0].size);
    let left: Vec<_> = std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_resume_after_the_file_changed_starts_again_instead_of_splicing() {
    let repo = two_adapter_repo();
    let config_file = repo.files[1].clone();
    assert!(config_file.name == "adapter_config.json" && !config_file.lfs);
    let v1 = served(&config_file);
    // A new version of the same size: the cut lands in the old one, the resume in the new one.
    let v2: Vec<u8> = v1
        .iter()
        .map(|&b| if b == b' ' { b'\t' } else { b })
        .collect();
    assert!(v1 != v2 && v1.len() == v2.len());
    let server = HubServer::start(vec![repo.clone()]);
    let path = format!("resolve/{}/adapter_config.json", repo.sha);
    server.faults().cut = Some((path.clone(), v1.len() as u64 / 2, 1));
    server.faults().change_after_get = Some((path.clone(), v2.clone()));
    let mut cfg = config(&server);
    cfg.retries = 1;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let done = guard(30, "fetch", move || fetch(cfg, &root, "org/adapter")).unwrap();
    let got = std::fs::read(done.snapshot.join("adapter_config.json")).unwrap();
    assert!(
        got == v1 || got == v2,
        "half one version, half another:\n{}",
        String::from_utf8_lossy(&got)
    );
    let gets: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains(&path))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(
        gets[1].if_range.as_deref(),
        Some(format!("\"{}\"", config_file.etag).as_str()),
        "{gets:?}"
    );
}

#[test]
fn a_dripping_server_makes_fetch_give_up_with_a_clear_message() {
    let repo = two_adapter_repo();
    let path = format!("resolve/{}/adapter_model.safetensors", repo.sha);
    // A few bytes per connection, then close: ~4200 connections for this file, each of which
    // used to count as progress.
    let server = HubServer::start(vec![repo.clone()]);
    server.drip(&path, 100);
    let mut cfg = config(&server);
    cfg.retries = 3;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let t0 = std::time::Instant::now();
    let err = guard(20, "fetch", move || fetch(cfg, &root, "org/adapter")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too slow") && msg.contains("4 attempts in a row brought 400 bytes"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let part = tmp
        .path()
        .join("models--org--adapter/blobs")
        .join(format!("{}.incomplete", repo.files[0].etag));
    assert_eq!(
        std::fs::metadata(part).unwrap().len(),
        400,
        "kept for a resume"
    );

    // 20 KiB per connection, each open 250 ms: every connection alone is within its 300 ms
    // window, but no window brings 64 KiB.
    let server = HubServer::start(vec![repo.clone()]);
    server.drip(&path, 20 << 10);
    server.faults().trickle = Some((path.clone(), 20 << 10, Duration::from_millis(250)));
    let mut cfg = config(&server);
    cfg.retries = 3;
    cfg.download_timeout = Duration::from_millis(300);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let t0 = std::time::Instant::now();
    let err = guard(20, "fetch", move || fetch(cfg, &root, "org/adapter")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too slow") && msg.contains("never 64 KiB within 0.3 s"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn a_metadata_answer_that_never_ends_hits_its_overall_deadline() {
    let server = HubServer::start(vec![two_adapter_repo()]);
    // 64 KiB every 50 ms: each 300 ms window brings plenty, and the body never ends.
    server.faults().endless = Some(("/api/models/".into(), 64 << 10, Duration::from_millis(50)));
    let mut cfg = config(&server);
    cfg.etag_timeout = Duration::from_millis(300);
    let t0 = std::time::Instant::now();
    let err = guard(15, "repo info", move || {
        let hub = Hub::new(cfg, "test").unwrap();
        let r: RepoRef = "org/adapter".parse().unwrap();
        rt().block_on(hub.repo_info(&r))
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("too slow") && msg.contains("did not end within 1.8 s"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

// --- the cache walk -------------------------------------------------------------------------

const SMALL: Dims = Dims {
    layers: 2,
    hidden: 32,
    q_out: 32,
    kv_out: 16,
    experts: 2,
    inter: 16,
};

fn spec() -> Spec {
    Spec::new(SMALL, Pattern::Attention)
}

fn scan(root: &Path) -> Vec<Adapter> {
    let root = root.to_path_buf();
    guard(60, "scan", move || {
        discovery::scan(&ScanRequest {
            cache: Some(root),
            ..Default::default()
        })
    })
}

fn by_id<'a>(v: &'a [Adapter], id: &str) -> &'a Adapter {
    v.iter().find(|a| a.id == id).unwrap_or_else(|| {
        let ids: Vec<&str> = v.iter().map(|a| a.id.as_str()).collect();
        panic!("no {id} in {ids:?}")
    })
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", p.display());
}

/// The blob a snapshot file links to.
fn blob_of(snapshot_file: &Path) -> PathBuf {
    snapshot_file.canonicalize().unwrap()
}

fn snapshot(h: &support::Hub, id: &str) -> PathBuf {
    h.repo_dir(id).join("snapshots").join(support::rev(id))
}

#[test]
fn fifos_in_the_cache_become_errors_and_the_scan_goes_on() {
    let h = support::Hub::new();
    for id in [
        "org/good",
        "org/fifo-weights",
        "org/fifo-config",
        "org/fifo-ref",
    ] {
        h.add(id, &spec());
    }
    // A FIFO behind the snapshot's symlink (the type is checked after following it), a FIFO as
    // the config, and a FIFO as refs/main.
    mkfifo(&blob_of(
        &snapshot(&h, "org/fifo-weights").join("adapter_model.safetensors"),
    ));
    mkfifo(&blob_of(
        &snapshot(&h, "org/fifo-config").join("adapter_config.json"),
    ));
    mkfifo(&h.repo_dir("org/fifo-ref").join("refs/main"));

    let v = scan(&h.root);
    assert_eq!(by_id(&v, "org/good").kind, Kind::Lora);
    let w = by_id(&v, "org/fifo-weights");
    assert_eq!(w.kind, Kind::Error);
    let msg = w.error.as_deref().unwrap();
    assert!(
        msg.contains("FIFO") && msg.contains("not a regular file"),
        "{msg}"
    );
    let c = by_id(&v, "org/fifo-config");
    assert_eq!(c.kind, Kind::Lora, "the weights are fine");
    assert!(
        c.notes.iter().any(|n| n.contains("not a regular file")),
        "{:?}",
        c.notes
    );
    let r = by_id(&v, "org/fifo-ref");
    assert_eq!(r.kind, Kind::Error);
    let msg = r.error.as_deref().unwrap();
    assert!(
        msg.contains("refs/main") && msg.contains("not a regular file"),
        "{msg}"
    );

    // The one opening helper, used for tensor data too, refuses a FIFO without blocking.
    let fifo = h.dir.path().join("fifo");
    mkfifo(&fifo);
    let e = guard(10, "open_regular", move || {
        lorascope::adapter::fsread::open_regular(&fifo).map(|_| ())
    })
    .unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
}

#[test]
fn folder_links_in_a_snapshot_are_not_followed() {
    let h = support::Hub::new();
    h.add_files("org/links", &[("weights/x.bin", b"not safetensors")]);
    // 30 links to `.` fanned out to 30^4 paths when links were followed.
    let snap = snapshot(&h, "org/links");
    for i in 0..30 {
        std::os::unix::fs::symlink(".", snap.join(format!("l{i:02}"))).unwrap();
        std::os::unix::fs::symlink("..", snap.join("weights").join(format!("up{i:02}"))).unwrap();
    }
    let v = scan(&h.root);
    let a = by_id(&v, "org/links");
    assert_eq!(a.kind, Kind::NoSafetensors);
    assert_eq!(a.other_files, ["weights/x.bin"]);
}

#[test]
fn refs_main_cannot_point_outside_the_snapshots() {
    let h = support::Hub::new();
    // An adapter outside the cache that a crafted refs/main would make lorascope scan.
    let outside = h.dir.path().join("outside");
    lorascope::synth::write_adapter(&outside, &spec()).unwrap();
    let crafted = [
        ("org/absolute", outside.display().to_string()),
        ("org/dotdot", "../../../outside".to_string()),
        (
            "org/nested",
            format!("{}/../../../outside", support::rev("x")),
        ),
    ];
    for (id, target) in &crafted {
        h.add(id, &spec());
        std::fs::write(h.repo_dir(id).join("refs/main"), target).unwrap();
    }
    let v = scan(&h.root);
    for (id, target) in &crafted {
        let a = by_id(&v, id);
        assert_eq!(a.kind, Kind::Error, "{id}");
        let msg = a.error.as_deref().unwrap();
        assert!(
            msg.contains("refs/main") && msg.contains(target.as_str()) && msg.contains("snapshot"),
            "{msg}"
        );
    }
    assert!(
        v.iter().all(|a| !a.path.starts_with(&outside)),
        "scanned outside the cache"
    );
}

#[test]
fn repo_folders_with_non_utf8_names_are_listed() {
    use std::os::unix::ffi::OsStrExt;
    let h = support::Hub::new();
    h.add("org/plain", &spec());
    h.add("org/other", &spec());
    let odd = h
        .root
        .join(std::ffi::OsStr::from_bytes(b"models--org--caf\xff"));
    std::fs::rename(h.repo_dir("org/other"), &odd).unwrap();
    let v = scan(&h.root);
    let a = by_id(&v, "org/caf\u{FFFD}");
    assert_eq!(a.kind, Kind::Lora);
    assert_eq!(by_id(&v, "org/plain").kind, Kind::Lora);
}
