//! The one registry of background work (statistics, comparisons, Hub fetches). Every job is
//! started, advanced, cancelled and finished the same way: `start` queues its `Effect` under a
//! `JobKey`, the event loop answers with `Action::Progress` and `Action::Done` carrying the
//! `JobId`, and a result whose job is no longer running (cancelled, or its view was left) is
//! dropped.

use super::app::{CompareOutput, Effect};
use crate::adapter::Adapter;
use crate::base::merged::MergedReport;
use crate::base::stats::{BaseReport, Intruders};
use crate::compute::stats::AdapterStats;
use crate::health::Health;
use crate::run::timeline::Timeline;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub type JobId = u64;

/// What a job is for; at most one job per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKey {
    /// Statistics of the adapter at this index, in its layout as loaded (false) or with fused
    /// gate_up deltas split into gate and up (true): statistics are per layout.
    Stats(usize, bool),
    /// Comparison of adapters A and B (indices).
    Compare(usize, usize),
    /// A Hub fetch of this repo (as typed, normalised: `ORG/NAME[@REV]`).
    Fetch(String),
    /// The health check of the adapter at this index (the list's health column).
    Health(usize),
    /// The statistics against the base model of the adapter at this index, per layout as
    /// `Stats`.
    Base(usize, bool),
    /// A merged model's weights minus its base's (docs/base.md), of the full model at this
    /// index.
    Merged(usize),
    /// The intruder dimensions of one delta (its index in the adapter, in the layout shown) of
    /// the adapter at this index.
    Intruders(usize, bool, usize),
    /// The Hub source's discovery: the adapters of this base model (`ORG/NAME`).
    Discover(String),
    /// The export (`x`) of the adapter at this index (one at a time: its panel is modal).
    Export(usize),
    /// The timeline of the run with this id and this many checkpoints (a run that gains one
    /// as the scan goes on is another timeline).
    Timeline(String, usize),
}

impl JobKey {
    /// Results kept for the rest of the run; a fetch's adapters are handed over to the list.
    fn keeps_result(&self) -> bool {
        !matches!(
            self,
            JobKey::Fetch(_) | JobKey::Discover(_) | JobKey::Export(_)
        )
    }

    /// The status bar's message when the job fails.
    pub fn failure(&self, e: &str) -> String {
        match self {
            JobKey::Stats(..) => format!("statistics failed: {e}"),
            JobKey::Compare(..) => format!("compare failed: {e}"),
            JobKey::Health(..) => format!("health check failed: {e}"),
            // The adapter's own metrics stay: only the base ones are missing.
            JobKey::Base(..) => format!("no base metrics: {e}"),
            JobKey::Merged(..) => format!("merged minus base failed: {e}"),
            JobKey::Intruders(..) => format!("intruder dimensions failed: {e}"),
            // Fetch errors already name the repo.
            JobKey::Fetch(_) => e.to_string(),
            JobKey::Discover(base) => format!("the Hub cannot be listed for {base}: {e}"),
            JobKey::Export(_) => format!("export failed: {e}"),
            JobKey::Timeline(id, _) => format!("the timeline of {id} failed: {e}"),
        }
    }
}

/// What a job produces.
#[derive(Debug, Clone)]
pub enum JobOutput {
    Stats(Arc<AdapterStats>),
    Compare(Arc<CompareOutput>),
    /// The adapters of the fetched repo, read from the cache.
    Fetch(Vec<Adapter>),
    Health(Arc<Health>),
    Base(Arc<BaseReport>),
    Merged(Arc<MergedReport>),
    /// The end of a Hub discovery (its rows came as `Action::HubRows`): what it cost.
    Discovered(crate::hub::SurveyStats),
    /// An export's report, and the written adapter as read back (it joins the list).
    Export(Arc<super::export_panel::Exported>),
    /// A run's timeline: complete, or as far as it is known (a partial result).
    Timeline(Arc<RunOutput>),
}

/// What the Run screen shows of a run: its timeline and the trainer's loss curve (every step
/// that logged a loss, ascending; empty without a `trainer_state.json`).
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub timeline: Timeline,
    pub loss: Vec<(u64, f64)>,
}

impl From<RunOutput> for JobOutput {
    fn from(r: RunOutput) -> Self {
        JobOutput::Timeline(Arc::new(r))
    }
}

impl From<BaseReport> for JobOutput {
    fn from(b: BaseReport) -> Self {
        JobOutput::Base(Arc::new(b))
    }
}

impl From<MergedReport> for JobOutput {
    fn from(m: MergedReport) -> Self {
        JobOutput::Merged(Arc::new(m))
    }
}

impl From<Health> for JobOutput {
    fn from(h: Health) -> Self {
        JobOutput::Health(Arc::new(h))
    }
}

impl From<AdapterStats> for JobOutput {
    fn from(s: AdapterStats) -> Self {
        JobOutput::Stats(Arc::new(s))
    }
}

impl From<CompareOutput> for JobOutput {
    fn from(c: CompareOutput) -> Self {
        JobOutput::Compare(Arc::new(c))
    }
}

impl From<super::export_panel::Exported> for JobOutput {
    fn from(e: super::export_panel::Exported) -> Self {
        JobOutput::Export(Arc::new(e))
    }
}

impl From<Vec<Adapter>> for JobOutput {
    fn from(a: Vec<Adapter>) -> Self {
        JobOutput::Fetch(a)
    }
}

/// One job's state. Progress counts deltas (statistics, comparisons) or bytes (fetches).
#[derive(Debug, Clone)]
pub enum Job {
    Running {
        id: JobId,
        done: usize,
        total: usize,
        /// What the job has computed so far (a streamed result, e.g. base statistics whose
        /// costly fields arrive a layer at a time), shown until its result replaces it.
        partial: Option<JobOutput>,
    },
    Ready(JobOutput),
    Failed(String),
}

/// A running fetch, as the status bar shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchJob {
    pub id: JobId,
    /// The repo as typed (normalised): `ORG/NAME[@REV]`.
    pub repo: String,
    /// Bytes in place so far, of `total`.
    pub done: usize,
    pub total: usize,
}

/// Every job of one list's adapters (each source of the explorer has its own registry, as its
/// adapter indices are its own), and the work queued for the event loop.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: HashMap<JobKey, Job>,
    effects: Vec<Effect>,
    /// Shared by sibling registries, so that a job id names one job of the run.
    last_id: Arc<AtomicU64>,
}

impl Jobs {
    /// An empty registry whose job ids never collide with this one's (a result is routed to
    /// the registry that knows its id).
    pub fn sibling(&self) -> Jobs {
        Jobs {
            last_id: self.last_id.clone(),
            ..Jobs::default()
        }
    }

    /// Whether `job` is running here.
    pub fn runs(&self, job: JobId) -> bool {
        self.key_of(job).is_some()
    }

    /// Registers a running job under `key` and queues its work, built from its new id.
    pub fn start(&mut self, key: JobKey, total: usize, work: impl FnOnce(JobId) -> Effect) {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let partial = None;
        self.jobs.insert(
            key,
            Job::Running {
                id,
                done: 0,
                total,
                partial,
            },
        );
        self.effects.push(work(id));
    }

    /// Starts the Hub fetch of `repo` into the hub cache `cache`, shown as `label` (one fetch at
    /// a time); the status bar's sentence when it cannot start.
    pub fn start_fetch(
        &mut self,
        label: String,
        repo: crate::hub::RepoRef,
        cache: Option<&std::path::Path>,
    ) -> Result<JobKey, String> {
        if let Some(f) = self.fetch() {
            return Err(format!("{} is still being fetched", f.repo));
        }
        let Some(cache) = cache.map(std::path::Path::to_path_buf) else {
            return Err(
                "no hub cache folder to fetch into: pass --cache DIR or set \
                        HF_HUB_CACHE / HF_HOME / HOME"
                    .into(),
            );
        };
        let key = JobKey::Fetch(label);
        self.start(key.clone(), 0, |job| Effect::Fetch { job, repo, cache });
        Ok(key)
    }

    /// Queues work that is not a job (e.g. a plot export).
    pub fn request(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Work queued since the last call, for the event loop.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Cancels the running job under `key` and forgets it; true if there was one.
    pub fn cancel(&mut self, key: &JobKey) -> bool {
        let Some(Job::Running { id, .. }) = self.jobs.get(key) else {
            return false;
        };
        self.effects.push(Effect::Cancel(*id));
        self.jobs.remove(key);
        true
    }

    /// Stops the running discovery; its base model when there was one.
    pub fn cancel_discovery(&mut self) -> Option<String> {
        let key = self
            .jobs
            .iter()
            .find(|(k, j)| matches!(k, JobKey::Discover(_)) && matches!(j, Job::Running { .. }))
            .map(|(k, _)| k.clone())?;
        self.cancel(&key);
        match key {
            JobKey::Discover(base) => Some(base),
            _ => None,
        }
    }

    /// Records progress of the running job `job` (unknown jobs are ignored).
    pub fn progress(&mut self, job: JobId, done: usize, total: usize) {
        if let Some(Job::Running {
            done: d, total: t, ..
        }) = self.running_mut(job)
        {
            (*d, *t) = (done, total);
        }
    }

    /// Keeps what the running job `job` has computed so far (unknown jobs are ignored: a partial
    /// result of a cancelled or abandoned job is dropped like its result).
    pub fn partial(&mut self, job: JobId, output: JobOutput) -> Option<JobKey> {
        let key = self.key_of(job)?;
        if let Some(Job::Running { partial, .. }) = self.jobs.get_mut(&key) {
            *partial = Some(output);
        }
        Some(key)
    }

    /// Ends the running job `job` with its result: kept under its key (fetches are forgotten).
    /// Returns the key, or None when the result is no longer wanted and was dropped.
    pub fn finish(&mut self, job: JobId, result: &Result<JobOutput, String>) -> Option<JobKey> {
        let key = self.key_of(job)?;
        match result {
            _ if !key.keeps_result() => {
                self.jobs.remove(&key);
            }
            Ok(out) => {
                if let (JobKey::Compare(a, b), JobOutput::Compare(c)) = (&key, out) {
                    // The statistics came along: keep them for the adapter views too.
                    for (i, s) in [(*a, &c.stats_a), (*b, &c.stats_b)] {
                        if self.stats(i, false).is_none() {
                            let ready = Job::Ready(JobOutput::Stats(s.clone()));
                            self.jobs.insert(JobKey::Stats(i, false), ready);
                        }
                    }
                }
                self.jobs.insert(key.clone(), Job::Ready(out.clone()));
            }
            Err(e) => {
                self.jobs.insert(key.clone(), Job::Failed(e.clone()));
            }
        }
        Some(key)
    }

    /// Records a job's state that needs no work (e.g. a comparison that cannot run).
    pub fn insert(&mut self, key: JobKey, job: Job) {
        self.jobs.insert(key, job);
    }

    pub fn get(&self, key: &JobKey) -> Option<&Job> {
        self.jobs.get(key)
    }

    pub fn contains(&self, key: &JobKey) -> bool {
        self.jobs.contains_key(key)
    }

    /// Forgets a job (its result, or a running job whose result will then be dropped).
    pub fn remove(&mut self, key: &JobKey) {
        self.jobs.remove(key);
    }

    /// Keeps only the jobs for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&JobKey) -> bool) {
        self.jobs.retain(|k, _| keep(k));
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// The statistics of adapter `idx` in one layout (`JobKey::Stats`), when computed.
    pub fn stats(&self, idx: usize, split_gate_up: bool) -> Option<&Arc<AdapterStats>> {
        match self.jobs.get(&JobKey::Stats(idx, split_gate_up)) {
            Some(Job::Ready(JobOutput::Stats(s))) => Some(s),
            _ => None,
        }
    }

    /// The base statistics of adapter `idx` in one layout (`JobKey::Base`): computed, or what
    /// its running job has computed so far (some fields pending).
    pub fn base(&self, idx: usize, split_gate_up: bool) -> Option<&Arc<BaseReport>> {
        match self.jobs.get(&JobKey::Base(idx, split_gate_up)) {
            Some(Job::Ready(JobOutput::Base(b))) => Some(b),
            Some(Job::Running {
                partial: Some(JobOutput::Base(b)),
                ..
            }) => Some(b),
            _ => None,
        }
    }

    /// The merged model `idx` minus its base (`JobKey::Merged`), when computed.
    pub fn merged(&self, idx: usize) -> Option<&Arc<MergedReport>> {
        match self.jobs.get(&JobKey::Merged(idx)) {
            Some(Job::Ready(JobOutput::Merged(m))) => Some(m),
            _ => None,
        }
    }

    /// The intruder dimensions of one delta (`JobKey::Intruders`), when computed.
    pub fn intruders(&self, key: &JobKey) -> Option<&Intruders> {
        match self.jobs.get(key) {
            Some(Job::Ready(JobOutput::Base(b))) => b.deltas.first()?.intruders.as_ref(),
            _ => None,
        }
    }

    /// The timeline of `key` (`JobKey::Timeline`): complete, or as far as its running job has
    /// read it.
    pub fn timeline(&self, key: &JobKey) -> Option<&Arc<RunOutput>> {
        match self.jobs.get(key) {
            Some(Job::Ready(JobOutput::Timeline(t)))
            | Some(Job::Running {
                partial: Some(JobOutput::Timeline(t)),
                ..
            }) => Some(t),
            _ => None,
        }
    }

    /// The health of adapter `idx`, when checked.
    pub fn health(&self, idx: usize) -> Option<&Arc<Health>> {
        match self.jobs.get(&JobKey::Health(idx)) {
            Some(Job::Ready(JobOutput::Health(h))) => Some(h),
            _ => None,
        }
    }

    /// Whether a health check is running.
    pub fn health_running(&self) -> bool {
        self.jobs
            .iter()
            .any(|(k, j)| matches!((k, j), (JobKey::Health(_), Job::Running { .. })))
    }

    /// The comparison of adapters `a` and `b`, when computed.
    pub fn comparison(&self, a: usize, b: usize) -> Option<&Arc<CompareOutput>> {
        match self.jobs.get(&JobKey::Compare(a, b)) {
            Some(Job::Ready(JobOutput::Compare(c))) => Some(c),
            _ => None,
        }
    }

    /// The running fetch, if any (one at a time).
    pub fn fetch(&self) -> Option<FetchJob> {
        self.jobs.iter().find_map(|(k, j)| match (k, j) {
            (
                JobKey::Fetch(repo),
                &Job::Running {
                    id, done, total, ..
                },
            ) => Some(FetchJob {
                id,
                repo: repo.clone(),
                done,
                total,
            }),
            _ => None,
        })
    }

    /// The running discovery, if any: its id, repos read and repos listed.
    pub fn discovery(&self) -> Option<(JobId, usize, usize)> {
        self.jobs.iter().find_map(|(k, j)| match (k, j) {
            (
                JobKey::Discover(_),
                &Job::Running {
                    id, done, total, ..
                },
            ) => Some((id, done, total)),
            _ => None,
        })
    }

    /// The key of the running job `job`.
    pub fn key_of(&self, job: JobId) -> Option<JobKey> {
        self.jobs
            .iter()
            .find(|(_, j)| matches!(j, Job::Running { id, .. } if *id == job))
            .map(|(k, _)| k.clone())
    }

    fn running_mut(&mut self, job: JobId) -> Option<&mut Job> {
        self.jobs
            .values_mut()
            .find(|j| matches!(j, Job::Running { id, .. } if *id == job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Jobs {
        /// The id of the job running under `key`.
        fn running_id(&self, key: &JobKey) -> Option<JobId> {
            match self.jobs.get(key) {
                Some(Job::Running { id, .. }) => Some(*id),
                _ => None,
            }
        }
    }

    fn stats_effect(jobs: &mut Jobs, idx: usize) -> JobId {
        jobs.start(JobKey::Stats(idx, false), 10, Effect::Cancel);
        match jobs.take_effects().as_slice() {
            [Effect::Cancel(id)] => *id,
            e => panic!("one effect per start: {e:?}"),
        }
    }

    #[test]
    fn every_job_gets_its_own_id_and_progress() {
        let mut jobs = Jobs::default();
        let a = stats_effect(&mut jobs, 0);
        jobs.start(JobKey::Fetch("org/x".into()), 0, Effect::Cancel);
        let f = jobs.fetch().expect("the fetch runs").id;
        assert_ne!(a, f);
        jobs.progress(f, 500, 1000);
        jobs.progress(f + a + 100, 1, 1); // unknown: ignored
        assert!(matches!(
            jobs.get(&JobKey::Stats(0, false)),
            Some(Job::Running {
                done: 0,
                total: 10,
                ..
            })
        ));
        let fetch = jobs.fetch().unwrap();
        assert_eq!(
            (fetch.repo.as_str(), fetch.done, fetch.total),
            ("org/x", 500, 1000)
        );
    }

    #[test]
    fn sibling_registries_never_share_a_job_id() {
        let mut local = Jobs::default();
        let mut hub = local.sibling();
        let a = stats_effect(&mut local, 0);
        let b = stats_effect(&mut hub, 0);
        assert_ne!(a, b);
        // Each result is found only where its job runs.
        assert!(local.runs(a) && !local.runs(b) && hub.runs(b) && !hub.runs(a));
        hub.start(JobKey::Discover("o/base".into()), 0, Effect::Cancel);
        let (d, _, _) = hub.discovery().expect("the discovery runs");
        assert_eq!(hub.cancel_discovery().as_deref(), Some("o/base"));
        assert!(!hub.runs(d) && hub.discovery().is_none());
    }

    /// A base report of `n` deltas (what a streamed base job publishes).
    fn report(n: usize) -> JobOutput {
        BaseReport {
            base: "o/base".into(),
            path: String::new(),
            notes: vec![],
            deltas: vec![Default::default(); n],
        }
        .into()
    }

    #[test]
    fn a_partial_result_is_kept_with_its_running_job_until_the_result() {
        let mut jobs = Jobs::default();
        let key = JobKey::Base(0, false);
        jobs.start(key.clone(), 3, Effect::Cancel);
        let id = jobs.running_id(&key).expect("it runs");
        assert!(jobs.base(0, false).is_none());
        assert_eq!(jobs.partial(id, report(1)), Some(key.clone()));
        assert_eq!(jobs.base(0, false).map(|b| b.deltas.len()), Some(1));
        assert!(matches!(jobs.get(&key), Some(Job::Running { .. })));
        // The result replaces it; a partial that comes after is dropped.
        jobs.finish(id, &Ok(report(3)));
        assert_eq!(jobs.partial(id, report(2)), None);
        assert_eq!(jobs.base(0, false).map(|b| b.deltas.len()), Some(3));
        // A cancelled job's partial is dropped too.
        jobs.start(JobKey::Base(1, false), 3, Effect::Cancel);
        let id = jobs.running_id(&JobKey::Base(1, false)).unwrap();
        jobs.cancel(&JobKey::Base(1, false));
        assert_eq!(jobs.partial(id, report(1)), None);
        assert!(jobs.base(1, false).is_none() && !jobs.contains(&JobKey::Base(1, false)));
    }

    #[test]
    fn a_cancelled_jobs_result_is_dropped() {
        let mut jobs = Jobs::default();
        let id = stats_effect(&mut jobs, 3);
        assert!(jobs.cancel(&JobKey::Stats(3, false)));
        assert!(matches!(jobs.take_effects().as_slice(), [Effect::Cancel(j)] if *j == id));
        assert!(
            !jobs.cancel(&JobKey::Stats(3, false)),
            "nothing left to cancel"
        );
        assert_eq!(jobs.finish(id, &Err("cancelled".into())), None);
        assert!(jobs.is_empty());
    }

    #[test]
    fn failures_are_kept_but_fetches_are_forgotten() {
        let mut jobs = Jobs::default();
        let id = stats_effect(&mut jobs, 1);
        let key = jobs.finish(id, &Err("bad file".into()));
        assert_eq!(key, Some(JobKey::Stats(1, false)));
        assert!(
            matches!(jobs.get(&JobKey::Stats(1, false)), Some(Job::Failed(e)) if e == "bad file")
        );
        assert_eq!(
            JobKey::Stats(1, false).failure("bad file"),
            "statistics failed: bad file"
        );
        jobs.start(JobKey::Fetch("org/y".into()), 0, Effect::Cancel);
        let f = jobs.fetch().unwrap().id;
        let key = jobs.finish(f, &Ok(JobOutput::Fetch(vec![])));
        assert_eq!(key, Some(JobKey::Fetch("org/y".into())));
        assert!(jobs.fetch().is_none() && !jobs.contains(&JobKey::Fetch("org/y".into())));
        assert_eq!(jobs.finish(f, &Ok(JobOutput::Fetch(vec![]))), None);
    }
}
