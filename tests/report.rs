//! `report`: on a cache built like the survey (140 repos, sparse real-size files), the counts per
//! pattern are the survey's; over HTTP the same report costs less than 1 % of the bytes.

mod support;

use lorascope::adapter::discovery::{self, ScanRequest};
use lorascope::report::{self, Report};
use lorascope::synth::{self, Dims, Pattern, Spec};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use support::server::{repos_from_cache, HubServer};

/// Repos per row in the survey's tables (docs/survey.md), with its
/// approximate figures resolved as documented in `lorascope::synth::survey`.
const SURVEY: [(&str, usize); 9] = [
    ("attention-only", 96),  // A: 30 + 22 + 20 + 19 + 1 + 1; A2: 2; A3: 1
    ("attention+router", 2), // B
    ("attention+experts per-expert", 15), // C, "~15"
    ("attention+experts shared-3d", 1), // D
    ("full-weights", 1),     // E
    ("multi-adapter repos", 1), // F
    ("empty", 2),
    ("no-safetensors", 22), // the rest of 140 (its "~30" does not fit)
    ("error", 0),
];

fn survey_cache() -> (tempfile::TempDir, lorascope::synth::survey::Written) {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let w = lorascope::synth::survey::write_cache(tmp.path(), &lorascope::synth::survey::repos())
        .unwrap();
    eprintln!(
        "survey cache: {} repos, {} bytes apparent, written in {:?}",
        w.repos,
        w.bytes,
        t.elapsed()
    );
    (tmp, w)
}

fn local_report(cache: &Path) -> Report {
    let adapters = discovery::scan(&ScanRequest {
        cache: Some(cache.to_path_buf()),
        ..Default::default()
    });
    report::build(&adapters, None)
}

fn row_counts(r: &serde_json::Value) -> Vec<(String, u64)> {
    r["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pattern"].as_str().unwrap().to_string(),
                p["repos"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn survey_counts() -> Vec<(String, u64)> {
    SURVEY
        .iter()
        .map(|(p, n)| (p.to_string(), *n as u64))
        .collect()
}

fn counts<T: Clone>(c: &[report::Count<T>]) -> Vec<(T, usize)> {
    c.iter().map(|c| (c.value.clone(), c.count)).collect()
}

#[test]
fn the_survey_cache_reports_the_survey_counts() {
    let (tmp, written) = survey_cache();
    assert_eq!(written.repos, 140);
    let t = Instant::now();
    let r = local_report(tmp.path());
    eprintln!("scan + report of the survey cache: {:?}", t.elapsed());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(row_counts(&json), survey_counts());
    assert_eq!((r.overview.repos, r.overview.adapters), (140, 150));
    // The report counts safetensors; the rest written is configs, .bin stand-ins and READMEs.
    assert!(r.overview.bytes <= written.bytes && written.bytes - r.overview.bytes < 200_000);

    // Every repo lands in the row the survey gives it.
    let expected: BTreeMap<String, &str> = lorascope::synth::survey::repos()
        .into_iter()
        .map(|s| (s.id, s.row))
        .collect();
    let got: BTreeMap<String, &str> = r
        .repos
        .iter()
        .map(|x| (x.repo.clone(), x.pattern.as_str()))
        .collect();
    assert_eq!(got, expected);

    let row = |name: &str| r.patterns.iter().find(|p| p.pattern == name).unwrap();
    let a = row("attention-only");
    assert_eq!(
        a.adapters, 107,
        "96 repos + the 11 adapters of the multi-adapter repo"
    );
    assert_eq!(
        counts(&a.attention_ranks),
        [(8, 22), (16, 32), (32, 30), (128, 23)]
    );
    assert_eq!(counts(&a.tensors), [(96, 3), (192, 104)]);
    assert_eq!(
        counts(&a.dtypes),
        [("F32".to_string(), 84), ("BF16".to_string(), 23)]
    );
    assert_eq!(
        counts(&a.targets),
        [("q,k,v,o".to_string(), 104), ("q,v".to_string(), 3)]
    );

    // Pattern C per expert: r = 8, 16, 64 (the survey's 256, 512, 2048 are r·E with E = 32).
    let c = row("attention+experts per-expert");
    assert_eq!(counts(&c.expert_ranks), [(8, 9), (16, 3), (64, 3)]);
    let packed: Vec<(Option<usize>, Option<usize>, usize)> = r
        .rank_distribution
        .iter()
        .filter(|x| x.packed_rank.is_some())
        .map(|x| (x.expert_rank, x.packed_rank, x.adapters))
        .collect();
    assert_eq!(
        packed,
        [
            (Some(8), Some(256), 9),
            (Some(16), Some(512), 3),
            (Some(64), Some(2048), 3)
        ]
    );
    assert_eq!(
        counts(&row("attention+experts shared-3d").expert_ranks),
        [(32, 1)]
    );

    let sets: Vec<(Vec<usize>, &str, usize)> = r
        .expert_layers
        .sets
        .iter()
        .map(|s| {
            (
                s.layers.clone(),
                s.expert_layout.unwrap().as_str(),
                s.adapters,
            )
        })
        .collect();
    let all: Vec<usize> = (0..24).collect();
    assert_eq!(
        sets,
        [
            (all.clone(), "per-expert", 13),
            (all, "shared-3d", 1),
            (vec![0, 7, 10, 15, 23], "per-expert", 1),
            (vec![7, 15, 23], "per-expert", 1),
        ]
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("only some of their layers")),
        "{:#?}",
        r.notes
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("15 adapter(s) use PEFT target_parameters")),
        "{:#?}",
        r.notes
    );

    // Markdown carries the same numbers.
    let md = r.markdown();
    for p in &r.patterns {
        let line = format!("| {} | {} | {} |", p.pattern, p.repos, p.adapters);
        assert!(md.contains(&line), "{line} missing from\n{md}");
    }
    assert!(md.contains("| 8 | 8 | 9 | packed as r·E = 256 |"), "{md}");
}

#[test]
fn report_groups_local_adapters_and_notes_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // A folder of checkpoints: the folder itself is an adapter, with two sub-adapters.
    for (sub, seed) in [("", 1), ("checkpoint-1", 2), ("checkpoint-2", 3)] {
        let mut s = Spec::new(Dims::TOY, Pattern::Attention);
        s.seed = seed;
        synth::write_adapter(&runs.join(sub), &s).unwrap();
    }
    let single = tmp.path().join("single");
    synth::write_adapter(
        &single,
        &Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] }),
    )
    .unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"\xff\xff\xff\xff\xff\xff\xff\xffnot a header").unwrap();
    let adapters = discovery::scan(&ScanRequest {
        cache: None,
        paths: vec![runs.clone(), single.clone(), bad.clone()],
        ..Default::default()
    });
    let r = report::build(&adapters, None);
    let rows: BTreeMap<&str, (usize, usize)> = r
        .patterns
        .iter()
        .map(|p| (p.pattern.as_str(), (p.repos, p.adapters)))
        .collect();
    assert_eq!(rows["multi-adapter repos"], (1, 3));
    assert_eq!(rows["attention-only"], (0, 3));
    assert_eq!(rows["attention+experts per-expert"], (1, 1));
    assert_eq!(rows["error"], (1, 1));
    assert_eq!(r.overview.repos, 3);
    assert!(!rows.contains_key("other-lora"));
    let err_note = r
        .notes
        .iter()
        .find(|n| n.contains("could not be read"))
        .expect("an error note");
    assert!(
        err_note.contains("bad.safetensors") && err_note.contains("absurd"),
        "{err_note}"
    );
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("only some of their layers") && n.contains("(layers 1)")));

    // Nothing at all: a report of zeros, not a failure.
    let empty = report::build(&[], None);
    assert_eq!(empty.overview.repos, 0);
    assert!(empty.markdown().contains("No adapter carries expert LoRA"));
}

fn lorascope(args: &[&str], endpoint: Option<&str>) -> std::process::Output {
    // The header cache goes to a temporary folder, not the user's cache.
    let xdg = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"));
    c.args(args)
        .env("XDG_CACHE_HOME", xdg.path())
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    if let Some(e) = endpoint {
        c.env("HF_ENDPOINT", e);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn remote_report_over_140_repos_reads_under_one_percent() {
    let (tmp, written) = survey_cache();
    let cache = tmp.path().to_str().unwrap();
    let local = lorascope(&["report", "--cache", cache, "--format", "json"], None);
    let local: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(row_counts(&local), survey_counts());

    let server = HubServer::start(repos_from_cache(tmp.path()));
    let list = tmp.path().join("repos.txt");
    // In the cache's order, so that the examples of both reports are the same.
    let mut ids: Vec<String> = lorascope::synth::survey::repos()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    std::fs::write(&list, ids.join("\n")).unwrap();
    let t = Instant::now();
    let out = lorascope(
        &[
            "report",
            "--remote",
            list.to_str().unwrap(),
            "--format",
            "json",
        ],
        Some(&server.endpoint),
    );
    let elapsed = t.elapsed();
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row_counts(&remote), survey_counts());
    assert_eq!(remote["rank_distribution"], local["rank_distribution"]);
    assert_eq!(remote["expert_layers"]["sets"].as_array().unwrap().len(), 4);

    let served = server.total_bytes();
    let share = served as f64 / written.bytes as f64;
    eprintln!(
        "report --remote: 140 repos, {served} bytes served (heads included) for {} bytes of files = {:.4} %, {elapsed:?}",
        written.bytes,
        100.0 * share
    );
    assert!(share < 0.01, "{served} of {} bytes", written.bytes);
    assert_eq!(remote["remote"]["repos"], 140);
    assert_eq!(remote["remote"]["failed"], 0);
    let counted = remote["remote"]["bytes_transferred"].as_u64().unwrap();
    assert_eq!(
        counted,
        server.body_bytes(),
        "client and server agree on body bytes"
    );

    let md = lorascope(
        &["report", "--remote", &ids[..3].join(",")],
        Some(&server.endpoint),
    );
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.contains("- **Remote**: 3 repos read over HTTP"), "{md}");
    assert!(md.contains("| attention-only | 3 | 3 |"), "{md}");
    assert!(
        md.contains("### attention-only (3 repos, 3 adapters)"),
        "{md}"
    );
}

/// `scan --remote` of the survey's 140 repos served locally, cold then with a warm header cache
/// (the figures of docs/performance.md: `cargo test --test report -- --nocapture scan_remote`).
/// Warm, the Hub is asked only for the repo list: no file is read again.
#[test]
fn scan_remote_of_the_survey_cold_and_warm() {
    let (tmp, _) = survey_cache();
    let served: Vec<_> = repos_from_cache(tmp.path())
        .into_iter()
        .map(|r| r.with_base("openai/gpt-oss-20b"))
        .collect();
    let server = HubServer::start(served);
    let xdg = tempfile::tempdir().unwrap();
    let run = || {
        let t = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
            .args(["scan", "--remote", "--json"])
            .env("HF_ENDPOINT", &server.endpoint)
            .env("XDG_CACHE_HOME", xdg.path())
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap();
        let elapsed = t.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, elapsed)
    };
    let (cold, t_cold) = run();
    let cold_bytes = server.total_bytes();
    let cold_requests = server.seen().len();
    server.reset_counters();
    let (warm, t_warm) = run();
    eprintln!(
        "scan --remote, 140 survey repos: cold {t_cold:?} ({cold_requests} requests, {cold_bytes} bytes served), warm {t_warm:?} ({} requests, {} bytes)",
        server.seen().len(),
        server.total_bytes()
    );
    // Rows are adapters; a multi-adapter repo gives several (`org/name/sub`).
    let repos: std::collections::BTreeSet<String> = cold
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap();
            id.splitn(3, '/').take(2).collect::<Vec<_>>().join("/")
        })
        .collect();
    assert_eq!(repos.len(), 140);
    assert_eq!(cold, warm, "the warm rows are the cold rows");
    assert_eq!(server.requests_for("/resolve/"), 0);
    assert_eq!(server.seen().len(), server.requests_for("/api/models?"));
}
