//! Discovery on the Hub (`scan --remote`, `report --remote` without a LIST): search pages, 429
//! with Retry-After, gated repos, a stalled header read, the token across hosts, offline mode,
//! the header cache (sha change, corrupt file, --refresh) and a bounded load test, all against
//! the Hub-like server in `support::server` on 127.0.0.1.

mod support;

use lorascope::adapter::layout::LayoutOptions;
use lorascope::hub::{HeaderCache, Hub, HubAdapter, HubConfig, SearchQuery, SurveyStats};
use lorascope::Kind;
use std::path::Path;
use std::time::{Duration, Instant};
use support::server::{adapter_files, config, rt, HubServer, ServedFile, ServedRepo};

const BASE: &str = "openai/gpt-oss-20b";

/// `n` one-adapter repos `org{i%3}/adapter-{i}` listed under BASE, with distinct ranks (so that a
/// row read from the wrong repo shows) and downloads/likes.
fn repos(n: usize) -> Vec<ServedRepo> {
    (0..n)
        .map(|i| {
            let mut r = ServedRepo::new(
                &format!("org{}/adapter-{i:04}", i % 3),
                adapter_files("", 1 + i % 8),
            )
            .with_base(BASE);
            r.downloads = 100 + i as u64;
            r.likes = i as u64 % 5;
            r
        })
        .collect()
}

fn query(limit: Option<usize>) -> SearchQuery {
    SearchQuery {
        base: Some(BASE.into()),
        limit,
        ..SearchQuery::default()
    }
}

fn discover(
    cfg: HubConfig,
    cache: Option<HeaderCache>,
    q: &SearchQuery,
) -> (Vec<HubAdapter>, SurveyStats) {
    rt().block_on(async {
        Hub::new(cfg, "test")
            .unwrap()
            .with_header_cache(cache)
            .discover(q, LayoutOptions::default(), &|_, _| {})
            .await
            .unwrap()
    })
}

fn ids(rows: &[HubAdapter]) -> Vec<String> {
    rows.iter().map(|r| r.adapter.id.clone()).collect()
}

#[test]
fn search_follows_three_pages_and_rows_carry_the_hub_fields() {
    let mut all = repos(7);
    // Not adapters of BASE: never listed.
    all.push(ServedRepo::new("other/model", adapter_files("", 4)).with_base("x/y"));
    all.push(ServedRepo::new("plain/model", adapter_files("", 4)));
    let server = HubServer::start(all.clone());
    server.set_page_max(3);

    let (rows, stats) = discover(config(&server), None, &query(None));
    let mut want: Vec<String> = all[..7].iter().map(|r| r.id.clone()).collect();
    want.sort();
    let mut got = ids(&rows);
    got.sort();
    assert_eq!(got, want);
    assert_eq!(server.requests_for("/api/models?"), 3, "7 repos, 3 a page");
    assert_eq!((stats.repos, stats.failed), (7, 0));
    for r in &rows {
        let served = all.iter().find(|s| s.id == r.adapter.id).unwrap();
        assert_eq!(r.adapter.kind, Kind::Lora, "{:?}", r.adapter.error);
        assert_eq!(r.adapter.revision.as_deref(), Some(served.sha.as_str()));
        assert_eq!(r.meta.downloads, Some(served.downloads));
        assert_eq!(r.meta.likes, Some(served.likes));
        assert_eq!(
            r.meta.last_modified.as_deref(),
            Some("2025-08-10T12:00:00.000Z")
        );
        let rank = served
            .id
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
            % 8
            + 1;
        assert_eq!(r.adapter.attention_rank(), Some(rank), "{}", served.id);
    }
    // The search answer gave each sha and file list: no repo-info request.
    assert_eq!(server.requests_for("/revision/"), 0);

    server.reset_counters();
    let (rows, _) = discover(config(&server), None, &query(Some(4)));
    assert_eq!(rows.len(), 4);
    assert_eq!(server.requests_for("/api/models?"), 2, "stops after 4");

    let q = SearchQuery {
        author: Some("org1".into()),
        search: Some("adapter-000".into()),
        ..query(None)
    };
    let (rows, _) = discover(config(&server), None, &q);
    assert_eq!(ids(&rows), ["org1/adapter-0001", "org1/adapter-0004"]);
}

#[test]
fn a_429_waits_for_retry_after() {
    let server = HubServer::start(repos(2));
    server.faults().rate_limit = Some(("/api/models".into(), 1, 1));
    let mut cfg = config(&server);
    cfg.retries = 2;
    let t = Instant::now();
    let (rows, _) = discover(cfg.clone(), None, &query(None));
    assert_eq!(rows.len(), 2);
    // The backoff is 10 ms: only Retry-After makes the second attempt wait a second.
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(server.requests_for("/api/models?"), 2);

    // Without retries the 429 is the error, and says so.
    server.faults().rate_limit = Some(("/api/models".into(), 1, 1));
    cfg.retries = 0;
    let err = rt()
        .block_on(async {
            Hub::new(cfg, "test")
                .unwrap()
                .discover(&query(None), LayoutOptions::default(), &|_, _| {})
                .await
        })
        .expect_err("429");
    assert!(err.to_string().contains("429 (rate limited)"), "{err}");
}

#[test]
fn gated_repos_are_error_rows_with_the_reason() {
    let mut all = repos(2);
    all[1].gated = true;
    let server = HubServer::start(all);
    let (rows, stats) = discover(config(&server), None, &query(None));
    assert_eq!(stats.failed, 1);
    let gated = &rows[1].adapter;
    assert_eq!(gated.kind, Kind::Error);
    let e = gated.error.as_deref().unwrap();
    assert!(e.contains("401") && e.contains("set HF_TOKEN"), "{e}");
    assert_eq!(rows[0].adapter.kind, Kind::Lora);

    let mut cfg = config(&server);
    cfg.token = Some("hf_no_access".into());
    let (rows, _) = discover(cfg, None, &query(None));
    let e = rows[1].adapter.error.as_deref().unwrap();
    assert!(
        e.contains("403") && e.contains("does not grant access"),
        "{e}"
    );
}

#[test]
fn a_header_read_that_times_out_is_one_error_row_and_the_scan_goes_on() {
    let server = HubServer::start(repos(4));
    server.faults().stall = Some(("org1/adapter-0001/resolve".into(), 0));
    let mut cfg = config(&server);
    cfg.etag_timeout = Duration::from_millis(500);
    let tmp = tempfile::tempdir().unwrap();
    let cache = HeaderCache::new(tmp.path().into(), false);
    let (rows, stats) = discover(cfg.clone(), Some(cache.clone()), &query(None));
    assert_eq!(rows.len(), 4);
    assert_eq!(
        stats.failed, 0,
        "the repo was listed; its adapter is the error"
    );
    for r in &rows {
        if r.adapter.id == "org1/adapter-0001" {
            assert_eq!(r.adapter.kind, Kind::Error);
            assert!(r.adapter.error.as_deref().unwrap().contains("timed out"));
        } else {
            assert_eq!(r.adapter.kind, Kind::Lora, "{:?}", r.adapter.error);
        }
    }
    // The failed read was not cached: once the server answers, the row is right.
    server.faults().stall = None;
    server.reset_counters();
    let (rows, _) = discover(cfg, Some(cache), &query(None));
    assert!(rows.iter().all(|r| r.adapter.kind == Kind::Lora));
    assert!(server.requests_for("/resolve/") > 0);
    assert_eq!(
        server.requests_for("/resolve/"),
        server.requests_for("org1/adapter-0001/resolve/"),
        "only the repo that failed is read again"
    );
}

#[test]
fn the_token_is_not_sent_to_a_next_page_on_another_host() {
    let all = repos(4);
    let a = HubServer::start(all.clone());
    let b = HubServer::start(all);
    a.set_page_max(2);
    b.set_page_max(2);
    a.faults().next_base = Some(b.endpoint.clone());
    let mut cfg = config(&a);
    cfg.token = Some("hf_secret".into());
    let (rows, _) = discover(cfg, None, &query(None));
    assert_eq!(rows.len(), 4);
    let seen_b = b.seen();
    assert!(
        seen_b.iter().any(|s| s.path.starts_with("/api/models?")),
        "the second page came from the other host"
    );
    assert!(seen_b.iter().all(|s| s.auth.is_none()), "{seen_b:?}");
    let seen_a = a.seen();
    assert!(seen_a
        .iter()
        .all(|s| s.auth.as_deref() == Some("Bearer hf_secret")));
}

/// The binary with a private HOME and header cache, and the endpoint in its environment.
fn lorascope_at(
    server: &HubServer,
    home: &Path,
    args: &[&str],
    extra: &[(&str, &Path)],
) -> std::process::Output {
    let mut env = vec![
        ("HF_ENDPOINT", Path::new(&server.endpoint)),
        ("XDG_CACHE_HOME", home),
    ];
    env.extend_from_slice(extra);
    support::lorascope(args, home, &env)
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn cli_scan_remote_json_and_table_and_offline() {
    let server = HubServer::start(repos(3));
    let home = tempfile::tempdir().unwrap();
    let out = ok(&lorascope_at(
        &server,
        home.path(),
        &["scan", "--remote", "--json"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let r = &rows[0];
    assert_eq!(r["id"], "org0/adapter-0000");
    assert_eq!(r["source"], "hub");
    assert_eq!(
        r["revision"],
        lorascope::hub::cache::commit_id("org0/adapter-0000")
    );
    assert_eq!(r["downloads"], 100);
    assert_eq!(r["likes"], 0);
    assert_eq!(r["last_modified"], "2025-08-10T12:00:00.000Z");
    assert_eq!(r["kind"], "lora");
    // The local fields come first, in their documented order.
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys.first().map(|k| k.as_str()), Some("id"));
    assert_eq!(
        keys[keys.len() - 4..],
        ["source", "downloads", "likes", "last_modified"]
    );
    // Searched the default base.
    assert!(server.seen().iter().any(|s| s
        .path
        .contains("filter=base_model%3Aadapter%3Aopenai%2Fgpt-oss-20b")));

    let table = ok(&lorascope_at(
        &server,
        home.path(),
        &["scan", "--remote", "--base", BASE, "--author", "org2"],
        &[],
    ));
    assert!(
        table.contains("DOWNLOADS") && table.contains("LIKES"),
        "{table}"
    );
    assert!(table.contains("org2/adapter-0002"), "{table}");
    assert!(!table.contains("org0/"), "{table}");

    server.reset_counters();
    let out = lorascope_at(
        &server,
        home.path(),
        &["scan", "--remote"],
        &[("HF_HUB_OFFLINE", Path::new("1"))],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.lines().count() == 1,
        "{err}"
    );
    assert!(server.seen().is_empty(), "offline: no request");

    let out = lorascope_at(&server, home.path(), &["scan", "--limit", "3"], &[]);
    assert!(!out.status.success(), "--limit without --remote is refused");
}

#[test]
fn the_header_cache_rereads_only_changed_repos_and_survives_corruption() {
    let all = repos(5);
    let server = HubServer::start(all.clone());
    let tmp = tempfile::tempdir().unwrap();
    let cache = HeaderCache::new(tmp.path().into(), false);
    let (cold, _) = discover(config(&server), Some(cache.clone()), &query(None));
    assert!(
        server.requests_for("/resolve/") >= 10,
        "config + header of each repo"
    );

    server.reset_counters();
    let (warm, stats) = discover(config(&server), Some(cache.clone()), &query(None));
    assert_eq!(
        server.requests_for("/resolve/"),
        0,
        "all five from the cache"
    );
    assert_eq!(ids(&warm), ids(&cold));
    for (w, c) in warm.iter().zip(&cold) {
        let json = |a: &lorascope::Adapter| serde_json::to_value(a.summary()).unwrap();
        assert_eq!(json(&w.adapter), json(&c.adapter));
    }
    assert_eq!(stats.failed, 0);

    // A new commit of one repo, with another rank: only that repo is read again.
    let mut changed = all[2].clone();
    changed.sha = lorascope::hub::cache::commit_id("new commit");
    changed.files = adapter_files("", 16);
    server.set_repo(changed.clone());
    server.reset_counters();
    let (rows, _) = discover(config(&server), Some(cache.clone()), &query(None));
    let touched: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.path.contains("/resolve/"))
        .map(|s| s.path.clone())
        .collect();
    assert!(!touched.is_empty());
    assert!(
        touched
            .iter()
            .all(|p| p.contains(&changed.id) && p.contains(&changed.sha)),
        "{touched:?}"
    );
    let row = rows.iter().find(|r| r.adapter.id == changed.id).unwrap();
    assert_eq!(row.adapter.attention_rank(), Some(16));
    assert_eq!(row.adapter.revision.as_deref(), Some(changed.sha.as_str()));

    // A truncated cache file is ignored, read again and rewritten.
    let files = support::files_under(tmp.path());
    let victim = files
        .iter()
        .find(|p| p.to_string_lossy().contains("adapter-0003"))
        .unwrap()
        .clone();
    let full = std::fs::read(tmp.path().join(&victim)).unwrap();
    std::fs::write(tmp.path().join(&victim), &full[..full.len() / 3]).unwrap();
    server.reset_counters();
    let (rows, _) = discover(config(&server), Some(cache.clone()), &query(None));
    assert!(rows.iter().all(|r| r.adapter.kind == Kind::Lora));
    assert_eq!(
        server.requests_for("/resolve/"),
        server.requests_for("org0/adapter-0003/resolve/")
    );
    assert!(server.requests_for("/resolve/") > 0);
    assert_eq!(std::fs::read(tmp.path().join(&victim)).unwrap(), full);

    // --refresh reads everything again.
    server.reset_counters();
    let refresh = HeaderCache::new(tmp.path().into(), true);
    discover(config(&server), Some(refresh), &query(None));
    assert!(server.requests_for("/resolve/") >= 10);
}

#[test]
fn report_remote_without_a_list_discovers_the_base_the_local_adapters_name() {
    let mut all = repos(3);
    all.push(ServedRepo::new("lab/other-base-adapter", adapter_files("", 4)).with_base("lab/base"));
    let server = HubServer::start(all);
    let home = tempfile::tempdir().unwrap();
    let out = ok(&lorascope_at(
        &server,
        home.path(),
        &["report", "--remote", "--format", "json"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["remote"]["repos"], 3, "the default base: {BASE}");

    // A local cache whose adapter names lab/base: that base is searched.
    let hub = support::Hub::new();
    let spec =
        lorascope::synth::Spec::new(support::server::DIMS, lorascope::synth::Pattern::Attention);
    let mut g = lorascope::synth::generate(&spec);
    g.config["base_model_name_or_path"] = "lab/base".into();
    let st = lorascope::synth::safetensors_bytes(&g.tensors, true);
    let cfg = serde_json::to_vec(&g.config).unwrap();
    hub.add_files(
        "me/local",
        &[
            ("adapter_model.safetensors", &st),
            ("adapter_config.json", &cfg),
        ],
    );
    let cache = hub.root.to_str().unwrap().to_string();
    let out = ok(&lorascope_at(
        &server,
        home.path(),
        &["report", "--cache", &cache, "--remote", "--format", "json"],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["remote"]["repos"], 1);
    let repos: Vec<&str> = v["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repo"].as_str().unwrap())
        .collect();
    assert!(
        repos.contains(&"lab/other-base-adapter") && repos.contains(&"me/local"),
        "{repos:?}"
    );
}

/// 2,000 repos discovered and header-read by the binary under a 200 MB address-space limit,
/// with the server counting requests in flight: never more than the limit of 8.
#[test]
fn load_2000_repos_within_200_mb_and_the_concurrency_limit() {
    const N: usize = 2000;
    // One small adapter shared by every repo (the server holds it once).
    let files = vec![ServedFile::bytes(
        "adapter_model.safetensors",
        lorascope::synth::safetensors_bytes(
            &lorascope::synth::generate(&{
                let mut s = lorascope::synth::Spec::new(
                    lorascope::synth::Dims {
                        layers: 2,
                        hidden: 16,
                        q_out: 16,
                        kv_out: 8,
                        experts: 2,
                        inter: 8,
                    },
                    lorascope::synth::Pattern::Attention,
                );
                s.attn_rank = 2;
                s
            })
            .tensors,
            true,
        ),
    )];
    let all: Vec<ServedRepo> = (0..N)
        .map(|i| ServedRepo::new(&format!("org/a{i:05}"), files.clone()).with_base(BASE))
        .collect();
    let server = HubServer::start(all);
    server.set_page_max(500);
    let home = tempfile::tempdir().unwrap();
    let out = support::lorascope_limited(
        &["scan", "--remote", "--json"],
        home.path(),
        &[
            ("HF_ENDPOINT", Path::new(&server.endpoint)),
            ("XDG_CACHE_HOME", home.path()),
        ],
        200 * 1024,
    );
    let out = ok(&out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), N);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["id"], format!("org/a{i:05}"));
        assert_eq!(r["kind"], "lora", "{r}");
        assert_eq!(r["attention_rank"], 2);
        assert_eq!(r["source"], "hub");
    }
    assert_eq!(server.requests_for("/api/models?"), N / 500);
    let max = server.max_in_flight();
    assert!((1..=8).contains(&max), "{max} requests at once");
}
