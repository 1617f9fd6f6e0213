//! `hub`: fetch into the cache layout, resume, 404, timeouts, header-only remote reading, all
//! against the Hub-like server in `support::server` on 127.0.0.1.

mod support;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::adapter::layout::LayoutOptions;
use lorascope::hub::{self, FetchProgress, Hub, RepoRef};
use lorascope::{Error, Kind};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::server::{
    config, fetch, repos_from_cache, rt, two_adapter_repo, HubServer, ServedFile, DIMS,
};

fn snapshot_files(repo_dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let snaps = repo_dir.join("snapshots");
    for e in walkdir(&snaps) {
        out.push(e.strip_prefix(&snaps).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for e in rd {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn fetch_writes_the_cache_layout() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.token = Some("hf_test_token".into());
    let last = AtomicU64::new(0);
    let total = AtomicU64::new(0);
    let progress = |p: &FetchProgress| {
        assert!(p.done <= p.total && p.file_done <= p.file_size, "{p:?}");
        last.store(p.done, Ordering::SeqCst);
        total.store(p.total, Ordering::SeqCst);
    };
    let r: RepoRef = "org/adapter".parse().unwrap();
    let done = rt()
        .block_on(hub::fetch(cfg.clone(), tmp.path(), &r, &progress))
        .unwrap();

    let dir = tmp.path().join("models--org--adapter");
    assert_eq!(done.repo_dir, dir);
    assert_eq!(done.commit, repo.sha);
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        repo.sha
    );
    let wanted: Vec<&ServedFile> = repo
        .files
        .iter()
        .filter(|f| f.name != "README.md")
        .collect();
    assert_eq!(done.files.len(), wanted.len());
    for f in &wanted {
        let link = dir.join("snapshots").join(&repo.sha).join(&f.name);
        let target = std::fs::read_link(&link).unwrap();
        let depth = f.name.matches('/').count() + 2;
        let expect = format!("{}blobs/{}", "../".repeat(depth), f.etag);
        assert_eq!(
            target.display().to_string(),
            expect,
            "{} must be a relative link",
            f.name
        );
        let support::server::Body::Bytes(b) = &f.body else {
            unreachable!()
        };
        assert_eq!(&std::fs::read(&link).unwrap(), b.as_ref(), "{}", f.name);
        assert!(dir.join("blobs").join(&f.etag).is_file());
    }
    // LFS files are named by their content hash (X-Linked-Etag), not the pointer's ETag.
    assert!(done
        .files
        .iter()
        .any(|f| f.name == "adapter_model.safetensors" && f.etag.len() == 64));
    assert!(!snapshot_files(&dir).iter().any(|f| f.contains("README")));
    assert!(walkdir(&dir.join("blobs"))
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".incomplete")));
    let sizes: u64 = wanted.iter().map(|f| f.size).sum();
    assert_eq!(
        (last.load(Ordering::SeqCst), total.load(Ordering::SeqCst)),
        (sizes, sizes)
    );
    assert_eq!(done.downloaded, sizes);
    assert!(server
        .seen()
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer hf_test_token")));

    // The cache now scans as two LoRA adapters.
    let found = discovery::scan(&ScanRequest {
        cache: Some(tmp.path().to_path_buf()),
        ..Default::default()
    });
    let ids: Vec<(&str, Kind)> = found.iter().map(|a| (a.id.as_str(), a.kind)).collect();
    assert_eq!(
        ids,
        [("org/adapter", Kind::Lora), ("org/adapter/b", Kind::Lora)]
    );

    // Again: everything is in the cache, no file body is downloaded.
    server.reset_counters();
    let again = fetch(cfg, tmp.path(), "org/adapter").unwrap();
    assert_eq!(again.downloaded, 0);
    assert!(again.files.iter().all(|f| f.cached));
    assert_eq!(server.body_bytes_for("/resolve/"), 0);
}

#[test]
fn fetch_resumes_after_a_cut_connection() {
    let repo = two_adapter_repo();
    let st = repo.files[0].clone();
    assert_eq!(st.name, "adapter_model.safetensors");
    let cut_at = 100_000;
    assert!(st.size > 3 * cut_at);
    let server = HubServer::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models--org--adapter");
    let path = format!("resolve/{}/adapter_model.safetensors", repo.sha);

    // No retries: the run fails and leaves its partial download, and nothing in snapshots.
    server.faults().cut = Some((path.clone(), cut_at, 1));
    let err = fetch(config(&server), tmp.path(), "org/adapter").unwrap_err();
    assert!(matches!(err, Error::Hub(_)), "{err}");
    let part = dir.join("blobs").join(format!("{}.incomplete", st.etag));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut_at);
    assert!(!dir.join("blobs").join(&st.etag).exists());
    assert!(
        snapshot_files(&dir).is_empty(),
        "{:?}",
        snapshot_files(&dir)
    );
    assert!(!dir.join("refs/main").exists());

    // The next run asks only for the rest.
    server.reset_counters();
    fetch(config(&server), tmp.path(), "org/adapter").unwrap();
    let gets: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains(&path))
        .collect();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={cut_at}-").as_str())
    );
    assert_eq!(server.body_bytes_for(&path), st.size - cut_at);
    let support::server::Body::Bytes(b) = &st.body else {
        unreachable!()
    };
    assert_eq!(
        &std::fs::read(dir.join("blobs").join(&st.etag)).unwrap(),
        b.as_ref()
    );
    assert!(!part.exists());

    // With retries, one run survives two cuts and still downloads each byte once.
    let tmp2 = tempfile::tempdir().unwrap();
    server.reset_counters();
    server.faults().cut = Some((path.clone(), cut_at, 2));
    let mut cfg = config(&server);
    cfg.retries = 2;
    fetch(cfg, tmp2.path(), "org/adapter").unwrap();
    assert_eq!(server.body_bytes_for(&path), st.size);
    let blob = tmp2
        .path()
        .join("models--org--adapter/blobs")
        .join(&st.etag);
    assert_eq!(&std::fs::read(blob).unwrap(), b.as_ref());
}

#[test]
fn fetch_reports_404_and_leaves_no_partial_snapshot() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().unwrap();

    let err = fetch(config(&server), tmp.path(), "org/missing")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("no such repo"),
        "{err}"
    );
    assert!(!tmp.path().join("models--org--missing").exists());

    // The repo exists but one of its files is gone.
    server.faults().not_found = vec!["b/adapter_model.safetensors".into()];
    let err = fetch(config(&server), tmp.path(), "org/adapter")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("b/adapter_model.safetensors"),
        "{err}"
    );
    let dir = tmp.path().join("models--org--adapter");
    assert!(snapshot_files(&dir).is_empty());
    assert!(!dir.join("refs/main").exists());
}

#[test]
fn a_stalled_download_times_out() {
    let repo = two_adapter_repo();
    let server = HubServer::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    server.faults().stall = Some(("adapter_model.safetensors".into(), 1000));
    let mut cfg = config(&server);
    cfg.etag_timeout = Duration::from_millis(300);
    cfg.download_timeout = Duration::from_millis(300);
    let t = Instant::now();
    let err = fetch(cfg, tmp.path(), "org/adapter").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        matches!(&err, Error::Hub(hub::HubError::Timeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    let dir = tmp.path().join("models--org--adapter");
    assert!(snapshot_files(&dir).is_empty());
    let part = dir
        .join("blobs")
        .join(format!("{}.incomplete", repo.files[0].etag));
    assert_eq!(std::fs::metadata(part).unwrap().len(), 1000);
}

#[test]
fn offline_mode_fails_before_any_request() {
    let server = HubServer::start(vec![two_adapter_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.offline = true;
    let err = fetch(cfg, tmp.path(), "org/adapter")
        .unwrap_err()
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(server.seen().is_empty());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// A real-size PEFT expert adapter (sparse, 2.8 GB apparent) and the multi-adapter repo,
/// written as a cache and served.
fn real_size_repo() -> (tempfile::TempDir, HubServer) {
    let tmp = tempfile::tempdir().unwrap();
    let mut repos = lorascope::synth::survey::repos();
    repos
        .retain(|r| r.id == "survey/c-peft-experts-r64-01" || r.id == "survey/f-multi-adapter-r16");
    lorascope::synth::survey::write_cache(tmp.path(), &repos).unwrap();
    let server = HubServer::start(repos_from_cache(tmp.path()));
    (tmp, server)
}

#[test]
fn remote_inspection_reads_only_the_header() {
    let (tmp, server) = real_size_repo();
    let hub = Hub::new(config(&server), "test").unwrap();
    let repo: RepoRef = "survey/c-peft-experts-r64-01".parse().unwrap();
    let remote = rt()
        .block_on(hub.remote_adapters(&repo, LayoutOptions::default()))
        .unwrap();
    assert_eq!(remote.len(), 1);
    let a = &remote[0];

    // Exactly 8 bytes, then exactly the header, in two Range requests.
    let blob = std::fs::canonicalize(
        tmp.path()
            .join("models--survey--c-peft-experts-r64-01/snapshots")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut len8 = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open(&blob).unwrap(), &mut len8).unwrap();
    let n = u64::from_le_bytes(len8);
    let size = std::fs::metadata(&blob).unwrap().len();
    assert!(size > 1_000_000_000, "real size: {size}");
    assert_eq!(server.body_bytes_for("adapter_model.safetensors"), 8 + n);
    let ranges: Vec<String> = server
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("adapter_model.safetensors"))
        .filter_map(|s| s.range)
        .collect();
    assert_eq!(
        ranges,
        ["bytes=0-7".to_string(), format!("bytes=8-{}", 7 + n)]
    );
    assert_eq!(hub.bytes_received(), server.body_bytes());

    // The same adapter as a local scan of the cache sees it.
    let local = discovery::scan(&ScanRequest {
        cache: Some(tmp.path().to_path_buf()),
        ..Default::default()
    });
    let l = local.iter().find(|l| l.id == a.id).unwrap();
    let (mut rs, mut ls) = (a.summary(), l.summary());
    assert!(rs.path.starts_with(&server.endpoint), "{}", rs.path);
    (rs.path, ls.path) = (String::new(), String::new());
    assert_eq!(format!("{rs:?}"), format!("{ls:?}"));
    assert_eq!(a.deltas, l.deltas);
    assert_eq!(a.expert_rank(), Some(64));
    assert_eq!(a.experts(), Some(32));

    // A sub-adapter by id; an unknown one names the closest.
    let sub: RepoRef = "survey/f-multi-adapter-r16/lora-03".parse().unwrap();
    let v = rt()
        .block_on(hub.remote_adapters(&sub, LayoutOptions::default()))
        .unwrap();
    assert_eq!(
        v.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["survey/f-multi-adapter-r16/lora-03"]
    );
    let bad: RepoRef = "survey/f-multi-adapter-r16/lora-3".parse().unwrap();
    let e = rt()
        .block_on(hub.remote_adapters(&bad, LayoutOptions::default()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lora-03"), "{e}");
}

#[test]
fn a_survey_goes_on_when_repos_fail() {
    let (_tmp, server) = real_size_repo();
    // One repo is unknown, one never answers; the third is surveyed.
    server.faults().stall = Some(("/api/models/survey/f-multi-adapter-r16".into(), 0));
    let mut cfg = config(&server);
    cfg.etag_timeout = Duration::from_millis(300);
    cfg.download_timeout = Duration::from_millis(300);
    let hub = Hub::new(cfg, "test").unwrap();
    let repos =
        hub::parse_list("survey/nope\nsurvey/f-multi-adapter-r16\nsurvey/c-peft-experts-r64-01")
            .unwrap();
    let t = Instant::now();
    let (adapters, stats) = rt().block_on(hub.survey(&repos, LayoutOptions::default(), &|_| {}));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let kinds: Vec<(&str, Kind)> = adapters.iter().map(|a| (a.id.as_str(), a.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("survey/nope", Kind::Error),
            ("survey/f-multi-adapter-r16", Kind::Error),
            ("survey/c-peft-experts-r64-01", Kind::Lora)
        ]
    );
    assert!(adapters[0].error.as_deref().unwrap().contains("HTTP 404"));
    assert!(adapters[1].error.as_deref().unwrap().contains("timed out"));
    assert_eq!((stats.repos, stats.failed), (3, 2));
}

#[test]
fn transient_failures_are_retried() {
    let (_tmp, server) = real_size_repo();
    // The first header read is cut short; the retry succeeds.
    server.faults().cut = Some(("adapter_model.safetensors".into(), 4, 1));
    let mut cfg = config(&server);
    cfg.retries = 1;
    let hub = Hub::new(cfg, "test").unwrap();
    let repo: RepoRef = "survey/c-peft-experts-r64-01".parse().unwrap();
    let v = rt()
        .block_on(hub.remote_adapters(&repo, LayoutOptions::default()))
        .unwrap();
    assert_eq!(v[0].kind, Kind::Lora);
    assert!(
        server
            .seen()
            .iter()
            .filter(|s| s.range.as_deref() == Some("bytes=0-7"))
            .count()
            >= 2
    );
}

/// The binary, with the endpoint in the child's environment only.
fn lorascope(server: &HubServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(args)
        .env("HF_ENDPOINT", &server.endpoint)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap()
}

#[test]
fn cli_fetch_and_inspect_remote() {
    let server = HubServer::start(vec![two_adapter_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().to_str().unwrap();
    let out = lorascope(&server, &["fetch", "org/adapter", "--cache", cache]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 files"), "{stdout}");

    let out = lorascope(&server, &["inspect", "--remote", "org/adapter/b", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "org/adapter/b");
    assert_eq!(v["kind"], "lora");
    assert_eq!(v["deltas"].as_array().unwrap().len(), 4 * DIMS.layers);

    let out = lorascope(&server, &["inspect", "--remote", "org/missing"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("org/missing") && err.contains("404"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(["fetch", "org/adapter", "--cache", cache])
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE"));
}

#[test]
fn a_download_that_does_not_match_its_sha256_is_discarded() {
    let mut repo = two_adapter_repo();
    // The Hub's content hash of the file says something else than the bytes it serves.
    repo.files[0].etag = support::sha_hex(b"other content");
    let etag = repo.files[0].etag.clone();
    let server = HubServer::start(vec![repo]);
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch(config(&server), tmp.path(), "org/adapter")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256") && err.contains(&etag), "{err}");
    let dir = tmp.path().join("models--org--adapter");
    assert!(!dir.join("blobs").join(&etag).exists());
    assert!(!dir
        .join("blobs")
        .join(format!("{etag}.incomplete"))
        .exists());
    assert!(snapshot_files(&dir).is_empty());
}

/// The explorer's `F` job: fetch from the server, then the repo's adapters join the list.
#[test]
fn the_explorers_fetch_job_adds_the_repos_adapters() {
    use lorascope::tui::app::{Action, App, Effect, Options};
    use lorascope::tui::keymap::Command;
    let server = HubServer::start(vec![two_adapter_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut app = App::new(Options::default());
    app.update(Action::ScanDone {
        adapters: vec![],
        note: None,
    });
    app.fetch_cache = Some(tmp.path().to_path_buf());
    app.update(Action::Command(Command::Fetch));
    for c in "org/adapter".chars() {
        app.update(Action::Input(c));
    }
    app.update(Action::Command(Command::FetchStart));
    let Some(Effect::Fetch { job, repo, cache }) = app.take_effects().pop() else {
        panic!("no fetch effect");
    };
    let last = std::sync::Mutex::new((0, 0));
    let progress = |p: &FetchProgress| *last.lock().unwrap() = (p.done, p.total);
    let result = rt().block_on(lorascope::tui::event::fetch_job(
        config(&server),
        &cache,
        &repo,
        &progress,
    ));
    let (done, total) = *last.lock().unwrap();
    assert!(total > 0 && done == total, "{done}/{total}");
    app.update(Action::Done {
        job,
        result: result.map(Into::into),
        secs: 0.0,
    });
    let ids: Vec<&str> = app.adapters.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["org/adapter", "org/adapter/b"], "{:?}", app.status);
    assert!(app.adapters.iter().all(|a| a.error.is_none()));
    assert_eq!(
        app.adapters[app.selected_adapter().unwrap()].id,
        "org/adapter"
    );
    // Offline: the clear error, and nothing written.
    let mut cfg = config(&server);
    cfg.offline = true;
    let err = rt()
        .block_on(lorascope::tui::event::fetch_job(
            cfg,
            &tmp.path().join("other"),
            &repo,
            &|_: &FetchProgress| {},
        ))
        .unwrap_err();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

/// The local walk and the remote file list group a repo's files by one rule: the same adapter
/// folders in the same order (a folder, then its subfolders, then the next sibling: `a`, `a/b`,
/// `a-c`), hidden folders skipped, and the same no-safetensors note for a config-only folder.
#[test]
fn local_and_remote_group_adapter_folders_alike() {
    use lorascope::synth::{self, Item, Pattern, Spec};
    let tmp = tempfile::tempdir().unwrap();
    let adapter = |sub: &str| {
        let mut spec = Spec::new(DIMS, Pattern::Attention);
        spec.attn_rank = 2;
        Item::Adapter {
            sub: sub.into(),
            spec,
        }
    };
    let raw = |name: &str, bytes: &[u8]| Item::Raw {
        name: name.into(),
        bytes: bytes.to_vec(),
    };
    let items = [
        adapter(""),
        adapter("a-c"),
        adapter("a/b"),
        adapter("a"),
        raw(
            "ckpt/adapter_config.json",
            br#"{"peft_type": "LORA", "r": 8}"#,
        ),
        raw("ckpt/z.bin", b"PK"),
        raw("ckpt/a.pt", b"PK"),
        raw(".hidden/adapter_model.safetensors", b"not a header"),
        raw("README.md", b"# card"),
    ];
    synth::write_hub_repo(tmp.path(), "org/tree", &items).unwrap();
    let folders = |adapters: &[lorascope::Adapter]| -> Vec<(String, Vec<String>)> {
        adapters
            .iter()
            .map(|a| (a.id.clone(), a.other_files.clone()))
            .collect()
    };
    let local = discovery::scan(&ScanRequest {
        cache: Some(tmp.path().to_path_buf()),
        ..Default::default()
    });
    let server = HubServer::start(repos_from_cache(tmp.path()));
    let hub = Hub::new(config(&server), "test").unwrap();
    let repo: RepoRef = "org/tree".parse().unwrap();
    let remote = rt()
        .block_on(hub.remote_adapters(&repo, LayoutOptions::default()))
        .unwrap();
    assert_eq!(folders(&remote), folders(&local));
    let ids: Vec<&str> = local.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "org/tree",
            "org/tree/a",
            "org/tree/a/b",
            "org/tree/a-c",
            "org/tree/ckpt"
        ]
    );
    assert_eq!(local[4].other_files, ["a.pt", "z.bin"]);
    assert!(local[..4].iter().all(|a| a.kind == Kind::Lora), "{local:?}");
}
