//! Issue 22, the header cache and the model search under attack: links out of lorascope's cache
//! folder, entries that are devices, FIFOs or huge, headers that do not parse, a folder without
//! bound, search pages that loop, never end or are oversized, and Hub ids carrying control
//! characters. Hub tests run against the loopback server in `support::server`. What hung or
//! ballooned before runs under a time guard and a per-thread allocation budget, so a regression
//! fails instead of hanging or taking the machine's memory.

mod support;

use lorascope::adapter::layout::LayoutOptions;
use lorascope::hub::headers::{RawHeader, RepoRead, MAX_ENTRY_BYTES};
use lorascope::hub::{
    discover, HeaderCache, Hub, HubAdapter, HubConfig, RepoInfo, SearchQuery, SurveyStats,
};
use lorascope::Kind;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use support::server::{adapter_files, config, rt, HubServer, ServedFile, ServedRepo};

const BASE: &str = "openai/gpt-oss-20b";

// --- a per-thread allocation budget ----------------------------------------------------------

/// Counts the heap of the threads that asked for it (`within`), and refuses (null) what would
/// take them past their limit: a reader that would balloon fails there, the machine is spared.
/// Other threads are not counted, so tests running in parallel do not disturb the figures.
struct Budgeted;

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grow(n: usize) -> bool {
    let limit = LIMIT.with(Cell::get);
    if limit == 0 {
        return true;
    }
    let now = LIVE.with(Cell::get) + n;
    if now > limit {
        return false;
    }
    LIVE.with(|l| l.set(now));
    PEAK.with(|p| p.set(p.get().max(now)));
    true
}

fn shrink(n: usize) {
    if LIMIT.with(Cell::get) != 0 {
        LIVE.with(|l| l.set(l.get().saturating_sub(n)));
    }
}

unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !grow(l.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(l) };
        if p.is_null() {
            shrink(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        shrink(l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() && !grow(new - l.size()) {
            return std::ptr::null_mut();
        }
        let q = unsafe { System.realloc(p, l, new) };
        if q.is_null() {
            shrink(new.saturating_sub(l.size()));
        } else if new < l.size() {
            shrink(l.size() - new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Budgeted = Budgeted;

/// Runs `f` on a thread of its own with at most `limit` bytes of heap, failing the test when it
/// takes longer than `secs` (hung); returns its result and its peak heap.
fn within<T: Send + 'static>(
    secs: u64,
    limit: usize,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        LIMIT.with(|l| l.set(limit));
        let out = f();
        let peak = PEAK.with(Cell::get);
        LIMIT.with(|l| l.set(0));
        let _ = tx.send((out, peak));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s (hung or died)"))
}

const MIB: usize = 1 << 20;

// --- helpers ---------------------------------------------------------------------------------

fn query() -> SearchQuery {
    SearchQuery {
        base: Some(BASE.into()),
        ..SearchQuery::default()
    }
}

fn discover(cfg: HubConfig, cache: Option<HeaderCache>) -> (Vec<HubAdapter>, SurveyStats) {
    rt().block_on(async {
        Hub::new(cfg, "test")
            .unwrap()
            .with_header_cache(cache)
            .discover(&query(), LayoutOptions::default(), &|_, _| {})
            .await
            .unwrap()
    })
}

/// The folder of the header cache for `server`'s endpoint (`<host>_<port>`).
fn host_dir(cache: &Path, server: &HubServer) -> PathBuf {
    let host = server
        .endpoint
        .trim_start_matches("http://")
        .replace(':', "_");
    cache.join(host)
}

/// Where the header cache keeps `repo` at `sha`.
fn entry(cache: &Path, server: &HubServer, repo: &ServedRepo) -> PathBuf {
    host_dir(cache, server)
        .join(&repo.id)
        .join(format!("{}.json", repo.sha))
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

fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn listed(id: &str) -> ServedRepo {
    ServedRepo::new(id, adapter_files("", 4)).with_base(BASE)
}

// --- the header cache: links, entries that are not plain files, size -------------------------

/// Item 2: `hub-headers/<host>/<org>/<name>` (or `<host>/<org>`, or `<host>`) a link to the
/// user's folder made `scan --remote` write its entry there and delete the folder's `*.json`.
#[test]
fn links_in_the_header_cache_are_not_followed_and_no_user_file_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub-headers");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for (name, text) in [
        ("settings.json", "{\"mine\": 1}"),
        ("notes.json", "[]"),
        ("0123456789abcdef0123456789abcdef01234567.json", "{}"),
    ] {
        std::fs::write(outside.join(name), text).unwrap();
    }
    let before = support::fingerprint(&outside);

    let (a, b, c) = (
        listed("org/linked-name"),
        listed("lab/linked-org"),
        listed("own/real"),
    );
    let server = HubServer::start(vec![a.clone(), b.clone(), c.clone()]);
    let host = host_dir(&cache, &server);
    // A link at the name level and one at the org level.
    std::fs::create_dir_all(host.join("org")).unwrap();
    symlink(&outside, &host.join("org/linked-name"));
    symlink(&outside, &host.join("lab"));
    // A real folder of lorascope's holding a file of the user's and a link named like an entry
    // of another commit: neither is lorascope's to delete.
    let own = host.join("own/real");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("settings.json"), "{}").unwrap();
    let old_commit = own.join(format!("{}.json", support::rev("older commit")));
    symlink(&outside.join("notes.json"), &old_commit);

    let hc = HeaderCache::new(cache.clone(), false);
    for _ in 0..2 {
        let (rows, stats) = discover(config(&server), Some(hc.clone()));
        assert_eq!(stats.failed, 0);
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter().all(|r| r.adapter.kind == Kind::Lora),
            "{rows:?}"
        );
        assert_eq!(support::fingerprint(&outside), before, "written outside");
    }
    // The real folder got its entry and kept the rest.
    assert!(entry(&cache, &server, &c).is_file());
    assert!(own.join("settings.json").is_file());
    assert!(std::fs::symlink_metadata(&old_commit).unwrap().is_symlink());

    // A link at the host level: nothing is read from or written through it either.
    let other = HubServer::start(vec![a.clone()]);
    symlink(&outside, &host_dir(&cache, &other));
    let (rows, _) = discover(config(&other), Some(hc.clone()));
    assert_eq!(rows[0].adapter.kind, Kind::Lora);
    assert_eq!(support::fingerprint(&outside), before, "written outside");
}

/// Items 6 and 7: an entry that is a link to `/dev/zero`, a huge sparse file, a FIFO or a link
/// to one was read whole with `std::fs::read` (4.2 GB, 5.25 GB) or blocked forever in `open`.
/// Each is now ignored at once, with no more heap than a small entry, and read again.
#[test]
fn entries_that_are_devices_fifos_or_huge_are_ignored_without_blocking_or_ballooning() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub-headers");
    let repos: Vec<ServedRepo> = ["o/zero", "o/sparse", "o/huge", "o/fifo", "o/fifo-link"]
        .iter()
        .map(|id| listed(id))
        .collect();
    let server = HubServer::start(repos.clone());
    let hc = HeaderCache::new(cache.clone(), false);
    discover(config(&server), Some(hc.clone()));
    let ep = server.endpoint.clone();
    let good = entry(&cache, &server, &repos[0]);
    assert!(good.is_file(), "a first scan writes the entries");
    // A real entry, for comparison.
    let small = std::fs::metadata(&good).unwrap().len() as usize;

    let zero = entry(&cache, &server, &repos[0]);
    std::fs::remove_file(&zero).unwrap();
    symlink(Path::new("/dev/zero"), &zero);
    // Larger than an entry may be, small enough to be read by the old code within the budget.
    let sparse = entry(&cache, &server, &repos[1]);
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    let huge = entry(&cache, &server, &repos[2]);
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    mkfifo(&entry(&cache, &server, &repos[3]));
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    let link = entry(&cache, &server, &repos[4]);
    std::fs::remove_file(&link).unwrap();
    symlink(&fifo, &link);

    for r in &repos {
        let (hc, ep, id, sha) = (hc.clone(), ep.clone(), r.id.clone(), r.sha.clone());
        let (got, peak) = within(10, 256 * MIB, &r.id, move || {
            hc.get(&ep, &id, &sha).map(|read| read.info.files.len())
        });
        assert_eq!(got, None, "{}", r.id);
        assert!(peak < small + MIB, "{}: {peak} bytes of heap", r.id);
    }
    // The scan reads them from the Hub again and replaces them with real entries.
    let (rows, _) = within(60, 256 * MIB, "discover", move || {
        discover(config(&server), Some(hc))
    })
    .0;
    assert!(
        rows.iter().all(|r| r.adapter.kind == Kind::Lora),
        "{rows:?}"
    );
    for p in [&zero, &sparse, &huge, &link] {
        let md = std::fs::symlink_metadata(p).unwrap();
        assert!(md.is_file() && (md.len() as usize) < small * 2, "{p:?}");
    }
}

/// A safetensors file whose 8 bytes announce `n` bytes of header and whose header is `n` bytes
/// of `x` (UTF-8, so the old cache kept it): not a header anyone can parse.
fn junk_header_file(n: usize) -> Vec<u8> {
    let mut b = (n as u64).to_le_bytes().to_vec();
    b.extend(std::iter::repeat_n(b'x', n));
    b.extend_from_slice(&[0; 64]);
    b
}

/// Item 4: 16 repos with 95 MB junk headers wrote 1.5 GB into `hub-headers`. Only reads whose
/// every header parsed are kept.
#[test]
fn headers_that_do_not_parse_are_not_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = ServedRepo::new(
        "o/junk",
        vec![
            ServedFile::bytes("adapter_model.safetensors", junk_header_file(1 << 20)),
            adapter_files("", 4).pop().unwrap(), // its adapter_config.json
        ],
    )
    .with_base(BASE);
    let good = listed("o/good");
    let server = HubServer::start(vec![junk.clone(), good.clone()]);
    let hc = HeaderCache::new(tmp.path().into(), false);
    let (rows, _) = discover(config(&server), Some(hc));
    let kind = |id: &str| {
        rows.iter()
            .find(|r| r.adapter.id == id)
            .unwrap()
            .adapter
            .kind
    };
    assert_eq!(kind("o/junk"), Kind::Error);
    assert_eq!(kind("o/good"), Kind::Lora);
    assert!(entry(tmp.path(), &server, &good).is_file());
    assert!(
        !entry(tmp.path(), &server, &junk).exists(),
        "{:?}",
        support::files_under(tmp.path())
    );
}

/// The first 8 bytes, size and header of a real-shape safetensors file written sparse.
fn raw_header(spec: &lorascope::synth::Spec) -> RawHeader {
    let tmp = tempfile::tempdir().unwrap();
    lorascope::synth::write_adapter(tmp.path(), spec).unwrap();
    let path = tmp.path().join("adapter_model.safetensors");
    use std::io::Read;
    let mut f = std::fs::File::open(&path).unwrap();
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).unwrap();
    let mut json = vec![0u8; u64::from_le_bytes(len8) as usize];
    f.read_exact(&mut json).unwrap();
    RawHeader {
        len8,
        total: f.metadata().unwrap().len(),
        json,
    }
}

fn repo_read(sha: &str, folders: usize, header: &RawHeader, config: &str) -> RepoRead {
    let mut files = vec![];
    let (mut configs, mut headers) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..folders {
        let dir = format!("checkpoint-{i}/");
        files.push(format!("{dir}adapter_config.json"));
        files.push(format!("{dir}adapter_model.safetensors"));
        configs.insert(files[2 * i].clone(), Ok(config.as_bytes().to_vec()));
        headers.insert(files[2 * i + 1].clone(), Ok(header.clone()));
    }
    RepoRead {
        info: RepoInfo {
            sha: sha.into(),
            files,
        },
        configs,
        headers,
    }
}

/// Item 4: an entry has a size cap that real adapters fit in comfortably (the largest gpt-oss
/// layout, an Unsloth per-expert LoRA on every expert of gpt-oss-120b, ten checkpoints of it in
/// one repo), and more than that is not kept.
#[test]
fn a_cache_entry_is_capped_and_real_adapters_fit() {
    let dims = lorascope::synth::Dims {
        layers: 36,
        experts: 128,
        ..lorascope::synth::Dims::GPT_OSS_20B
    };
    let mut spec = lorascope::synth::Spec::new(
        dims,
        lorascope::synth::Pattern::UnslothExperts {
            layers: (0..36).collect(),
        },
    );
    spec.sparse = true;
    spec.dtype = safetensors::Dtype::BF16;
    let h = raw_header(&spec);
    eprintln!("gpt-oss-120b per-expert header: {} bytes", h.json.len());
    assert!(h.parse(Path::new("x")).is_ok());
    let tmp = tempfile::tempdir().unwrap();
    let hc = HeaderCache::new(tmp.path().into(), false);
    let ep = "http://h";
    let sha = support::rev("checkpoints");
    hc.put(ep, "o/checkpoints", &repo_read(&sha, 10, &h, "{}"));
    let kept = hc
        .get(ep, "o/checkpoints", &sha)
        .expect("ten 120b checkpoints are kept");
    assert_eq!(kept.headers.len(), 10);
    let size = std::fs::metadata(
        tmp.path()
            .join("h/o/checkpoints")
            .join(format!("{sha}.json")),
    )
    .unwrap()
    .len();
    eprintln!("an entry of ten of them: {size} bytes");
    assert!(size * 2 < MAX_ENTRY_BYTES, "{size} bytes");

    // One byte too many of configs: not kept.
    let big = "x".repeat(MAX_ENTRY_BYTES as usize);
    let sha2 = support::rev("too big");
    hc.put(ep, "o/big", &repo_read(&sha2, 1, &h, &format!("\"{big}\"")));
    assert!(hc.get(ep, "o/big", &sha2).is_none());
    assert!(support::files_under(tmp.path())
        .iter()
        .all(|p| !p.starts_with("h/o/big")));
}

/// Item 4: the folder is bounded: past its bound the oldest entries go, whoever wrote them.
#[test]
fn the_header_cache_folder_is_bounded_and_the_oldest_entries_go() {
    let tmp = tempfile::tempdir().unwrap();
    let json = br#"{"__metadata__":{}}"#.to_vec();
    let h = RawHeader {
        len8: (json.len() as u64).to_le_bytes(),
        total: 8 + json.len() as u64,
        json,
    };
    let config = format!("{{\"pad\": \"{}\"}}", "x".repeat(10_000));
    let ep = "http://h";
    let id = |i: usize| format!("o/repo-{i:02}");
    let sha = |i: usize| support::rev(&id(i));
    let path = |i: usize| {
        tmp.path()
            .join("h")
            .join(id(i))
            .join(format!("{}.json", sha(i)))
    };
    // Entries of a first run, then of a second run (another HeaderCache): ages one minute apart.
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    let age = |i: usize| {
        std::fs::File::options()
            .write(true)
            .open(path(i))
            .unwrap()
            .set_modified(t0 + Duration::from_secs(60 * i as u64))
            .unwrap();
    };
    let first = HeaderCache::new(tmp.path().into(), false);
    for i in 0..4 {
        first.put(ep, &id(i), &repo_read(&sha(i), 1, &h, &config));
        age(i);
    }
    let one = std::fs::metadata(path(0)).unwrap().len();
    let bound = 5 * one + one / 2;
    let second = HeaderCache::new(tmp.path().into(), false).with_bound(bound);
    let total = || -> u64 {
        support::files_under(tmp.path())
            .iter()
            .map(|p| std::fs::metadata(tmp.path().join(p)).unwrap().len())
            .sum()
    };
    for i in 4..12 {
        second.put(ep, &id(i), &repo_read(&sha(i), 1, &h, &config));
        age(i);
        assert!(total() <= bound, "{} > {bound} after {i}", total());
        assert!(path(i).is_file(), "the newest entry is kept");
        // What went is the oldest: the entries kept are the last ones written.
        let kept: Vec<usize> = (0..=i).filter(|&j| path(j).is_file()).collect();
        let n = kept.len();
        assert_eq!(kept, ((i + 1 - n)..=i).collect::<Vec<_>>(), "after {i}");
    }
    assert!(!path(0).exists(), "the first run's entries went first");
}

// --- the model search: pages that loop, never end or are oversized ----------------------------

/// Item 8: a `next` link looping between two pages was followed to the 10,000-page cap (7 min on
/// localhost, ~28 h at real latency). It stops at the first repeated page, saying so.
#[test]
fn a_search_whose_next_link_loops_stops_at_the_first_repeated_page() {
    let server = HubServer::start((0..6).map(|i| listed(&format!("o/a{i}"))).collect());
    server.set_page_max(2);
    server.faults().search.looping = true;
    let cfg = config(&server);
    let (err, _) = within(30, 64 * MIB, "search", move || {
        let hub = Hub::new(cfg, "test").unwrap();
        rt().block_on(hub.search(&query())).map(|v| v.len())
    });
    let err = err.expect_err("a loop is an error").to_string();
    assert!(
        err.contains("leads back to a page already read") && err.contains("cursor=c2"),
        "{err}"
    );
    // Pages c0 → c2 → c4 → c2: three requests.
    assert_eq!(server.requests_for("/api/models?"), 3);
}

/// Item 5: pages that never end and never repeat, each 4 MB and kept (long file lists), grew
/// memory without limit (5.5 GB in 30 s, then abort). What the search keeps is bounded.
#[test]
fn endless_search_pages_are_bounded_in_what_they_keep() {
    let files: Vec<ServedFile> = (0..20_000)
        .map(|i| ServedFile::bytes(&format!("runs/step-{i:05}/trainer_state.txt"), vec![]))
        .collect();
    let server = HubServer::start(vec![ServedRepo::new("o/many-files", files).with_base(BASE)]);
    server.set_page_max(4);
    server.faults().search.endless = true;
    let cfg = config(&server);
    let (err, peak) = within(120, 512 * MIB, "search", move || {
        let hub = Hub::new(cfg, "test").unwrap();
        rt().block_on(hub.search(&query())).map(|v| v.len())
    });
    let err = err.expect_err("endless pages are an error").to_string();
    assert!(
        err.contains(&format!("{} MiB", discover::MAX_SEARCH_BYTES >> 20))
            && err.contains("--limit"),
        "{err}"
    );
    eprintln!("endless pages: {} MiB of heap at most", peak / MIB);
    let kept = 3 * discover::MAX_SEARCH_BYTES as usize;
    assert!(peak < kept, "{} MiB of heap", peak / MIB);
    let pages = server.requests_for("/api/models?");
    assert!(pages < 40, "{pages} pages read");
}

/// Item 5: one page larger than a page may be is refused after reading no more than that.
#[test]
fn an_oversized_search_page_is_refused() {
    let server = HubServer::start(vec![listed("o/a")]);
    server.faults().search.pad = discover::MAX_SEARCH_PAGE_BYTES as usize + MIB;
    let cfg = config(&server);
    let (err, peak) = within(60, 256 * MIB, "search", move || {
        let hub = Hub::new(cfg, "test").unwrap();
        rt().block_on(hub.search(&query())).map(|v| v.len())
    });
    let err = err.expect_err("oversized").to_string();
    assert!(
        err.contains(&format!(
            "larger than {} MiB",
            discover::MAX_SEARCH_PAGE_BYTES >> 20
        )),
        "{err}"
    );
    assert!(
        peak < 3 * discover::MAX_SEARCH_PAGE_BYTES as usize,
        "{} MiB",
        peak / MIB
    );
}

// --- control characters from the Hub ---------------------------------------------------------

/// Item 14: a Hub model id with `\n` printed fake rows in the table and the error list, and
/// U+009B went raw through `--json`. Text shows every control character escaped, one row per
/// adapter; JSON writes C1 controls as `\u009b`, and reads back to the id the Hub sent.
#[test]
fn hub_ids_with_control_characters_are_escaped_in_text_and_json() {
    let evil = "org/evil\nfake-row  lora  -\u{9b}31m";
    let server = HubServer::start(vec![listed("org/fine"), listed(evil)]);
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = support::lorascope(
            args,
            home.path(),
            &[
                ("HF_ENDPOINT", Path::new(&server.endpoint)),
                ("XDG_CACHE_HOME", home.path()),
            ],
        );
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let c1 = |b: &[u8]| b.windows(2).any(|w| w == [0xc2, 0x9b]);

    let out = run(&["scan", "--remote"]);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!c1(&out.stdout) && !c1(&out.stderr), "{text}");
    assert!(!text.contains("\nfake-row"), "a fake row: {text}");
    assert!(text.contains("org/evil\\nfake-row"), "{text}");
    // The header, two rows, a blank line, `errors:` and one error line.
    assert_eq!(text.lines().count(), 6, "{text}");

    let out = run(&["report", "--remote", "--format", "md"]);
    let md = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!c1(&out.stdout) && !md.contains("\nfake-row"), "{md}");

    let out = run(&["scan", "--remote", "--json"]);
    assert!(!c1(&out.stdout), "raw U+009B in --json");
    let json = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(json.contains("\\u009b"), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&evil), "{ids:?}");
}
