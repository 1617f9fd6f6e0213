//! The event loop and the background work. Terminal events and background results become
//! actions; after each batch of actions the frame is drawn once. Scans, statistics and
//! comparisons run on tokio's blocking pool (rayon inside), report progress through the same
//! channel, and stop when their cancel flag is set.

use super::app::{Action, App, CompareOutput, Effect};
use super::jobs::{JobId, JobOutput, RunOutput};
use super::keymap::{self, Command};
use super::{export, ui};
use crate::adapter::discovery;
use crate::adapter::layout::LayoutOptions;
use crate::adapter::{Adapter, Source};
use crate::base::stats::{self as base_stats, BaseReport, Session};
use crate::base::Base;
use crate::compute::stats::{self, AdapterStats, Control, Filter};
use crate::hub::{self, FetchProgress, HubConfig, RepoRef};
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::crossterm::event::{Event, KeyCode, MouseButton, MouseEventKind};
use ratatui::Terminal;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Progress messages are sent at most this often (plus the last one), so a computation of
/// thousands of small deltas does not flood the loop with redraws.
const PROGRESS_EVERY: Duration = Duration::from_millis(40);

/// Partial results (streamed base statistics) are sent at most this often: each one rebuilds
/// the maps and the Stats table.
const PARTIAL_EVERY: Duration = Duration::from_millis(250);

/// A progress callback that sends throttled actions.
fn progress_fn(
    tx: UnboundedSender<Action>,
    make: impl Fn(usize, usize) -> Action + Send + Sync + 'static,
) -> impl Fn(usize, usize) + Send + Sync + 'static {
    let last = Mutex::new(Instant::now() - PROGRESS_EVERY);
    move |done, total| {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if done >= total || last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            let _ = tx.send(make(done, total));
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "cancelled".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error: {msg}")
}

/// Runs `work` on the blocking pool and sends its action; a panic becomes `on_panic`'s action,
/// so the screen shows a message instead of waiting forever.
fn spawn_work(
    tx: &UnboundedSender<Action>,
    work: impl FnOnce() -> Action + Send + 'static,
    on_panic: impl FnOnce(String) -> Action + Send + 'static,
) {
    let handle = tokio::task::spawn_blocking(work);
    let tx = tx.clone();
    tokio::spawn(async move {
        let action = match handle.await {
            Ok(a) => a,
            Err(e) => on_panic(panic_message(e)),
        };
        let _ = tx.send(action);
    });
}

/// What to scan: the cache and paths, or the demo cache when they hold nothing.
pub struct ScanJob {
    pub cache: Option<std::path::PathBuf>,
    pub explicit_cache: bool,
    pub paths: Vec<std::path::PathBuf>,
}

/// Finds the sources, then reads each adapter's headers, reporting progress.
pub fn spawn_scan(tx: &UnboundedSender<Action>, job: ScanJob) {
    let (tx2, rows) = (tx.clone(), tx.clone());
    spawn_work(
        tx,
        move || {
            let catalog = crate::adapter::catalog::Catalog {
                cache: job.cache,
                explicit_cache: job.explicit_cache,
            };
            let (src, note): (Vec<Source>, Option<String>) =
                match crate::synth::demo::sources_or_demo(&catalog, &job.paths) {
                    Ok(x) => x,
                    Err(e) => {
                        return Action::ScanDone {
                            adapters: vec![],
                            note: Some(format!("{e:#}")),
                        }
                    }
                };
            let total = src.len();
            let progress = progress_fn(tx2, |done, total| Action::ScanProgress {
                what: "reading adapter headers".into(),
                done,
                total,
            });
            progress(0, total.max(1));
            // Each adapter joins the list as soon as it and those before it are read: the first
            // rows are on screen while the rest of the headers are read.
            let mut done = 0;
            discovery::load_each(
                &src,
                LayoutOptions::default(),
                discovery::default_readers(),
                |a| {
                    let _ = rows.send(Action::ScanRows { adapters: vec![a] });
                    done += 1;
                    progress(done, total);
                },
            );
            Action::ScanDone {
                adapters: vec![],
                note,
            }
        },
        |e| Action::ScanDone {
            adapters: vec![],
            note: Some(e),
        },
    );
}

/// Runs effects, remembering each job's cancel flag.
pub struct Runner {
    tx: UnboundedSender<Action>,
    cancels: HashMap<JobId, Arc<AtomicBool>>,
    /// Running fetches and discoveries: cancelling one aborts its task (the network wait ends
    /// at once).
    fetches: HashMap<JobId, tokio::task::AbortHandle>,
    /// Opened base models, for the rest of the run.
    sessions: BaseSessions,
    /// How fetches and the Hub source reach the Hub, and where discovery keeps headers.
    hub: HubConfig,
    header_cache: Option<PathBuf>,
    /// Where run timelines keep what they measured (`run::cache`; None: nothing is kept).
    pub run_cache: Option<PathBuf>,
}

/// The base models opened so far, by snapshot folder: what depends on a base weight alone
/// (‖W‖, its top singular vectors) is computed once for every adapter set against it.
#[derive(Default, Clone)]
pub struct BaseSessions(Arc<Mutex<HashMap<PathBuf, Arc<Session>>>>);

impl BaseSessions {
    /// The statistics of `adapter` against the base `id` in the snapshot `dir` (opened once).
    /// The error is the sentence for the status bar (missing shards, another architecture).
    pub fn report(
        &self,
        adapter: &Adapter,
        id: &str,
        dir: &Path,
        ctl: &Control,
    ) -> Result<BaseReport, String> {
        let session = self.session(id, dir)?;
        base_stats::compute(&session, adapter, &Filter::default(), ctl).map_err(|e| e.to_string())
    }

    /// `report`, streamed: `publish` gets the relative change of every delta first, then the
    /// report so far after each layer (the rest pending), as `base::stats::compute_streamed`.
    pub fn report_streamed(
        &self,
        adapter: &Adapter,
        id: &str,
        dir: &Path,
        ctl: &Control,
        publish: &mut (dyn FnMut(BaseReport) + Send),
    ) -> Result<BaseReport, String> {
        let session = self.session(id, dir)?;
        let (all, fields) = (Filter::default(), base_stats::Fields::All);
        base_stats::compute_streamed(&session, adapter, &all, ctl, fields, publish)
            .map_err(|e| e.to_string())
    }

    /// The merged model `merged` (full weights, read like a base) minus the base `id` in the
    /// snapshot `dir`, every weight both hold (`base::merged::compute`).
    pub fn merged(
        &self,
        merged: &Adapter,
        id: &str,
        dir: &Path,
        ctl: &Control,
    ) -> Result<crate::base::merged::MergedReport, String> {
        let session = self.session(id, dir)?;
        // The model's own folder, as `stats MERGED --base` opens it.
        let own = if merged.path.is_dir() {
            merged.path.clone()
        } else {
            merged.path.parent().map(Into::into).unwrap_or_default()
        };
        let m = Base::open(&merged.id, &own)?;
        crate::base::merged::compute(&m, &session.base, &Filter::default(), ctl)
            .map_err(|e| e.to_string())
    }

    /// Delta `delta` of `adapter` against the base, with its intruder dimensions (the paper's
    /// defaults): a report of that one delta.
    pub fn intruders(
        &self,
        adapter: &Adapter,
        delta: usize,
        id: &str,
        dir: &Path,
        ctl: &Control,
    ) -> Result<BaseReport, String> {
        let d = adapter
            .deltas
            .get(delta)
            .ok_or_else(|| format!("{} has no delta {delta}", adapter.id))?;
        // The filter of `stats --layer --target --expert`; it must single the delta out.
        let filter = Filter {
            target: Some(d.target.to_string()),
            layer: d.layer,
            expert: d.expert,
        };
        let n = adapter
            .deltas
            .iter()
            .filter(|x| filter.matches(x.layer, &x.target, x.expert))
            .count();
        if n != 1 {
            return Err(format!(
                "{n} deltas share this delta's layer, target and expert: pick one with `lorascope stats --deep`"
            ));
        }
        let session = self.session(id, dir)?;
        let opts = Some(base_stats::IntruderOpts::default());
        base_stats::compute_deep(&session, adapter, &filter, ctl, opts).map_err(|e| e.to_string())
    }

    fn session(&self, id: &str, dir: &Path) -> Result<Arc<Session>, String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get(dir) {
            return Ok(s.clone());
        }
        let s = Arc::new(Session::new(Base::open(id, dir)?));
        m.insert(dir.to_path_buf(), s.clone());
        Ok(s)
    }
}

impl Runner {
    /// A runner that reaches the Hub as the environment says (`HF_ENDPOINT`, `HF_TOKEN`,
    /// `HF_HUB_OFFLINE`, …) and keeps headers in the user's header cache, as `scan --remote`.
    pub fn new(tx: UnboundedSender<Action>) -> Runner {
        Runner::with_hub(tx, HubConfig::from_env(), hub::HeaderCache::default_dir())
    }

    /// A runner with its own Hub settings and header-cache folder (None: no header cache).
    pub fn with_hub(
        tx: UnboundedSender<Action>,
        hub: HubConfig,
        header_cache: Option<PathBuf>,
    ) -> Runner {
        Runner {
            tx,
            cancels: HashMap::new(),
            fetches: HashMap::new(),
            sessions: BaseSessions::default(),
            hub,
            header_cache,
            run_cache: crate::run::cache::Cache::default_dir(),
        }
    }

    fn flag(&mut self, job: JobId) -> Arc<AtomicBool> {
        // Forget flags of finished jobs now and then; a set flag on a finished job is harmless.
        if self.cancels.len() > 64 {
            self.cancels.retain(|_, f| Arc::strong_count(f) > 1);
        }
        let f = Arc::new(AtomicBool::new(false));
        self.cancels.insert(job, f.clone());
        f
    }

    /// Runs a job that counts deltas on the blocking pool (all threads), with its progress and
    /// cancel flag, and sends its end.
    fn spawn_counted<T: Into<JobOutput>>(
        &mut self,
        job: JobId,
        work: impl FnOnce(&Control) -> Result<T, String> + Send + 'static,
    ) {
        let cancel = self.flag(job);
        let progress = progress_fn(self.tx.clone(), move |done, total| Action::Progress {
            job,
            done,
            total,
        });
        spawn_work(
            &self.tx,
            move || {
                let t = Instant::now();
                let ctl = Control {
                    threads: None,
                    progress: Some(&progress),
                    cancel: Some(&cancel),
                };
                Action::Done {
                    job,
                    result: work(&ctl).map(Into::into),
                    secs: t.elapsed().as_secs_f64(),
                }
            },
            move |e| Action::Done {
                job,
                result: Err(e),
                secs: 0.0,
            },
        );
    }

    pub fn cancel_all(&mut self) {
        for f in self.cancels.values() {
            f.store(true, Ordering::Relaxed);
        }
    }

    pub fn run(&mut self, effect: Effect, app: &mut App) {
        match effect {
            Effect::Cancel(job) => {
                if let Some(f) = self.cancels.remove(&job) {
                    f.store(true, Ordering::Relaxed);
                }
                if let Some(h) = self.fetches.remove(&job) {
                    h.abort();
                }
            }
            Effect::ExportPlot => {
                let r = export::export_plot(app);
                app.update(Action::PlotDone(r));
            }
            Effect::Fetch { job, repo, cache } => {
                let progress = progress_fn(self.tx.clone(), move |done, total| Action::Progress {
                    job,
                    done,
                    total,
                });
                // A fetch the user cancels takes back what it added to the cache.
                let folder = hub::CacheRepo::new(&cache, &repo.repo);
                let before = folder.before_fetch();
                let cfg = self.hub.clone();
                let handle = tokio::spawn(async move {
                    let progress =
                        move |p: &FetchProgress| progress(p.done as usize, p.total.max(1) as usize);
                    fetch_job(cfg, &cache, &repo, &progress).await
                });
                self.fetches.retain(|_, h| !h.is_finished());
                self.fetches.insert(job, handle.abort_handle());
                let tx = self.tx.clone();
                let t = Instant::now();
                tokio::spawn(async move {
                    let result = match handle.await {
                        Ok(r) => r,
                        Err(e) if e.is_cancelled() => {
                            let _ =
                                tokio::task::spawn_blocking(move || folder.discard_since(&before))
                                    .await;
                            Err("cancelled".into())
                        }
                        Err(e) => Err(panic_message(e)),
                    };
                    let _ = tx.send(Action::Done {
                        job,
                        result: result.map(JobOutput::from),
                        secs: t.elapsed().as_secs_f64(),
                    });
                });
            }
            Effect::Discover { job, base } => {
                let tx = self.tx.clone();
                let t = Instant::now();
                let (cfg, headers) = (self.hub.clone(), self.header_cache.clone());
                let handle = tokio::spawn(async move {
                    let result = discover_job(cfg, headers, &base, job, &tx).await;
                    let _ = tx.send(Action::Done {
                        job,
                        result: result.map(JobOutput::Discovered),
                        secs: t.elapsed().as_secs_f64(),
                    });
                });
                self.fetches.retain(|_, h| !h.is_finished());
                self.fetches.insert(job, handle.abort_handle());
            }
            Effect::Export {
                job,
                adapter,
                out,
                opts,
            } => {
                self.spawn_counted(job, move |ctl| {
                    super::export_panel::run(&adapter, &out, &opts, ctl)
                });
            }
            Effect::Stats { job, adapter } => {
                self.spawn_counted(job, move |ctl| {
                    stats::compute(&adapter, &Filter::default(), ctl).map_err(|e| e.to_string())
                });
            }
            Effect::Intruders {
                job,
                adapter,
                delta,
                id,
                dir,
            } => {
                let sessions = self.sessions.clone();
                self.spawn_counted(job, move |ctl| {
                    sessions.intruders(&adapter, delta, &id, &dir, ctl)
                });
            }
            Effect::Base {
                job,
                adapter,
                id,
                dir,
            } => {
                let sessions = self.sessions.clone();
                let tx = self.tx.clone();
                self.spawn_counted(job, move |ctl| {
                    // The first (relative change of every delta) at once, then a few a second.
                    let mut last: Option<Instant> = None;
                    let mut publish = |r: BaseReport| {
                        if last.is_none_or(|t| t.elapsed() >= PARTIAL_EVERY) {
                            last = Some(Instant::now());
                            let output = JobOutput::from(r);
                            let _ = tx.send(Action::Partial { job, output });
                        }
                    };
                    sessions.report_streamed(&adapter, &id, &dir, ctl, &mut publish)
                });
            }
            Effect::Merged {
                job,
                adapter,
                id,
                dir,
            } => {
                let sessions = self.sessions.clone();
                self.spawn_counted(job, move |ctl| sessions.merged(&adapter, &id, &dir, ctl));
            }
            Effect::Health { job, adapter } => {
                let cancel = self.flag(job);
                spawn_work(
                    &self.tx,
                    move || {
                        let t = Instant::now();
                        // One thread: the list's column fills in while keys stay answered.
                        let ctl = Control {
                            threads: Some(1),
                            progress: None,
                            cancel: Some(&cancel),
                        };
                        let result = crate::health::check(&adapter, &ctl)
                            .map(JobOutput::from)
                            .map_err(|e| e.to_string());
                        Action::Done {
                            job,
                            result,
                            secs: t.elapsed().as_secs_f64(),
                        }
                    },
                    move |e| Action::Done {
                        job,
                        result: Err(e),
                        secs: 0.0,
                    },
                );
            }
            Effect::Timeline { job, loaded } => {
                let cancel = self.flag(job);
                let (tx, cache) = (self.tx.clone(), self.run_cache.clone());
                spawn_work(
                    &self.tx,
                    move || {
                        let t = Instant::now();
                        let cache = cache.map(crate::run::cache::Cache::new);
                        let mut publish = |done, total, tl: RunOutput| {
                            let _ = tx.send(Action::Progress { job, done, total });
                            let output = JobOutput::from(tl);
                            let _ = tx.send(Action::Partial { job, output });
                        };
                        let result = timeline_job(*loaded, cache, &cancel, &mut publish);
                        Action::Done {
                            job,
                            result: result.map(JobOutput::from),
                            secs: t.elapsed().as_secs_f64(),
                        }
                    },
                    move |e| Action::Done {
                        job,
                        result: Err(e),
                        secs: 0.0,
                    },
                );
            }
            Effect::Compare {
                job,
                a,
                b,
                stats_a,
                stats_b,
            } => {
                let cancel = self.flag(job);
                let tx = self.tx.clone();
                spawn_work(
                    &self.tx,
                    move || {
                        let t = Instant::now();
                        let result = compare_job(job, &a, &b, stats_a, stats_b, &cancel, tx);
                        Action::Done {
                            job,
                            result: result.map(JobOutput::from),
                            secs: t.elapsed().as_secs_f64(),
                        }
                    },
                    move |e| Action::Done {
                        job,
                        result: Err(e),
                        secs: 0.0,
                    },
                );
            }
        }
    }
}

/// The Hub source's work: lists the adapters of `base` and reads their headers (through the
/// header cache of `scan --remote`), sending each repo's rows as `Action::HubRows` as soon as
/// they are read, with progress in repos. The error is the list's one line: offline (by
/// `HF_HUB_OFFLINE`, or the endpoint unreachable) or why the search failed.
pub async fn discover_job(
    cfg: HubConfig,
    header_cache: Option<PathBuf>,
    base: &str,
    job: JobId,
    tx: &UnboundedSender<Action>,
) -> Result<hub::SurveyStats, String> {
    let endpoint = cfg.endpoint.clone();
    let offline = |e: &crate::Error| match e {
        crate::Error::Hub(hub::HubError::Offline(_)) => "offline: HF_HUB_OFFLINE is set".into(),
        crate::Error::Hub(hub::HubError::Network { .. } | hub::HubError::Timeout { .. }) => {
            format!("offline: {endpoint} cannot be reached")
        }
        e => format!("search failed: {e}"),
    };
    let client = hub::Hub::new(cfg, "the Hub source")
        .map_err(|e| offline(&e))?
        .with_header_cache(header_cache.map(|d| hub::HeaderCache::new(d, false)));
    let q = hub::SearchQuery {
        base: Some(base.to_string()),
        ..hub::SearchQuery::default()
    };
    let progress = progress_fn(tx.clone(), move |done, total| Action::Progress {
        job,
        done,
        total,
    });
    let rows = tx.clone();
    client
        .discover_each(&q, LayoutOptions::default(), &progress, |r| {
            let _ = rows.send(Action::HubRows { job, rows: r });
        })
        .await
        .map_err(|e| offline(&e))
}

/// The `F` key's work: downloads `repo` into the hub cache `cache`, then reads the adapters of
/// the fetched snapshot (ids as a cache scan gives them: `ORG/NAME[/SUB]`).
pub async fn fetch_job(
    cfg: HubConfig,
    cache: &Path,
    repo: &RepoRef,
    progress: &hub::ProgressFn<'_>,
) -> Result<Vec<Adapter>, String> {
    let fetched = hub::fetch(cfg, cache, repo, progress)
        .await
        .map_err(|e| format!("fetching {repo}: {e}"))?;
    let (cache, repo) = (cache.to_path_buf(), repo.clone());
    tokio::task::spawn_blocking(move || fetched_adapters(&cache, &repo, &fetched))
        .await
        .map_err(panic_message)
}

/// The adapters of a fetched repo: the cache scan's sources of that repo when they are the
/// fetched snapshot, else (another revision than `main`) the snapshot's own folders.
fn fetched_adapters(cache: &Path, repo: &RepoRef, fetched: &hub::Fetched) -> Vec<Adapter> {
    let want = repo.adapter_id();
    let ours = |id: &str| id == want || id.starts_with(&format!("{want}/"));
    let mut src: Vec<Source> = discovery::discover_cache(cache)
        .into_iter()
        .filter(|s| ours(&s.id) && s.dir.starts_with(&fetched.snapshot))
        .collect();
    if src.is_empty() {
        let prefix = fetched.snapshot.display().to_string();
        src = discovery::discover_path(&fetched.snapshot)
            .into_iter()
            .map(|mut s| {
                s.id = format!("{}{}", repo.repo, s.id.strip_prefix(&prefix).unwrap_or(""));
                s.revision = Some(fetched.commit.clone());
                s
            })
            .filter(|s| ours(&s.id))
            .collect();
    }
    discovery::load_all(&src, LayoutOptions::default())
}

/// The Run screen's work: a run's timeline a checkpoint at a time (`run::timeline::Builder`),
/// `publish`ing (checkpoints done, of all, the run so far) first with nothing measured (the
/// steps and the trainer's log), then after each checkpoint; stops at the next checkpoint once
/// `cancel` is set.
pub fn timeline_job(
    loaded: crate::run::Loaded,
    cache: Option<crate::run::cache::Cache>,
    cancel: &AtomicBool,
    publish: &mut dyn FnMut(usize, usize, RunOutput),
) -> Result<RunOutput, String> {
    let loss = crate::run::state::Log::of_run(&loaded).losses();
    let mut b = crate::run::timeline::Builder::new(loaded, cache);
    let all = Filter::default();
    let now = |b: &crate::run::timeline::Builder| RunOutput {
        timeline: b.timeline(&all),
        loss: loss.clone(),
    };
    publish(0, b.total(), now(&b));
    let ctl = Control {
        threads: None,
        progress: None,
        cancel: Some(cancel),
    };
    while b.step(&ctl).map_err(|e| e.to_string())? {
        publish(b.done(), b.total(), now(&b));
    }
    Ok(now(&b))
}

/// Statistics of both (when missing), then the comparison, as one progress bar.
fn compare_job(
    job: JobId,
    a: &Adapter,
    b: &Adapter,
    stats_a: Option<Arc<AdapterStats>>,
    stats_b: Option<Arc<AdapterStats>>,
    cancel: &AtomicBool,
    tx: UnboundedSender<Action>,
) -> Result<CompareOutput, String> {
    let keys: std::collections::HashSet<_> = a.deltas.iter().map(|d| d.key()).collect();
    let pairs = b.deltas.iter().filter(|d| keys.contains(&d.key())).count();
    let na = if stats_a.is_some() { 0 } else { a.deltas.len() };
    let nb = if stats_b.is_some() { 0 } else { b.deltas.len() };
    let total = na + nb + pairs;
    let progress = progress_fn(tx, move |done, total| Action::Progress { job, done, total });
    let stage = |base: usize| {
        let p = &progress;
        move |done: usize, _| p(base + done, total)
    };
    let run_stats = |x: &Adapter, base: usize| -> Result<Arc<AdapterStats>, String> {
        let f = stage(base);
        let ctl = Control {
            threads: None,
            progress: Some(&f),
            cancel: Some(cancel),
        };
        stats::compute(x, &Filter::default(), &ctl)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    };
    let stats_a = match stats_a {
        Some(s) => s,
        None => run_stats(a, 0)?,
    };
    let stats_b = match stats_b {
        Some(s) => s,
        None => run_stats(b, na)?,
    };
    let f = stage(na + nb);
    let ctl = Control {
        threads: None,
        progress: Some(&f),
        cancel: Some(cancel),
    };
    let comparison = crate::compute::compare::compare(a, b, &ctl).map_err(|e| e.to_string())?;
    Ok(CompareOutput {
        comparison,
        stats_a,
        stats_b,
    })
}

/// A terminal event as an action (None: nothing to do).
pub fn to_action(app: &App, ev: &Event) -> Option<Action> {
    match ev {
        Event::Key(k) => {
            let c = keymap::lookup(&app.modes(), k)?;
            if c == Command::FilterChar {
                match k.code {
                    KeyCode::Char(ch) => Some(Action::Input(ch)),
                    _ => None,
                }
            } else {
                Some(Action::Command(c))
            }
        }
        Event::Mouse(m) => match m.kind {
            MouseEventKind::Down(MouseButton::Left) => Some(Action::Click {
                x: m.column,
                y: m.row,
            }),
            MouseEventKind::ScrollDown | MouseEventKind::ScrollUp => Some(Action::Scroll {
                x: m.column,
                y: m.row,
                down: m.kind == MouseEventKind::ScrollDown,
            }),
            _ => None,
        },
        Event::Resize(..) => Some(Action::Resize),
        _ => None,
    }
}

/// Draws the app and keeps what the frame drew where.
pub fn draw<B: Backend>(terminal: &mut Terminal<B>, app: &mut App) -> io::Result<()> {
    let mut hits = None;
    terminal
        .draw(|f| hits = Some(ui::render(f, app)))
        .map_err(|e| io::Error::other(e.to_string()))?;
    if let Some(h) = hits {
        app.hits = h;
    }
    Ok(())
}

/// The loop: one frame first (the scan's progress), then actions until the app quits.
pub async fn run_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut events: S,
    tx: UnboundedSender<Action>,
    mut rx: UnboundedReceiver<Action>,
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let mut runner = Runner::new(tx);
    draw(terminal, app)?;
    loop {
        // Keys first: a key must not wait behind a queue of progress messages.
        let action = tokio::select! {
            biased;
            ev = events.next() => match ev {
                Some(Ok(e)) => to_action(app, &e),
                Some(Err(e)) => return Err(e),
                None => break,
            },
            Some(a) = rx.recv() => Some(a),
        };
        if let Some(a) = action {
            app.update(a);
        }
        // Whatever else is already queued costs no extra frame.
        while let Ok(a) = rx.try_recv() {
            app.update(a);
        }
        for e in app.take_effects() {
            runner.run(e, app);
        }
        if app.quit {
            break;
        }
        draw(terminal, app)?;
    }
    runner.cancel_all();
    Ok(())
}
