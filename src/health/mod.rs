//! Health: verdicts on an adapter ("did my experts train? will it serve?"). Findings come from
//! the data (one pass shared with `stats`: dead and non-finite factors, negligible, outlying
//! and unbalanced deltas, unused rank), from the layout and config (coverage), and from the
//! serving rules of vLLM and SGLang (`serving`). docs/health.md lists every rule and its source.
//! Depends on `adapter` and `compute` only.

pub mod serving;

use crate::adapter::layout::{DeltaKey, ExpertLayout, Format, Role, Target};
use crate::adapter::{Adapter, Kind};
use crate::compute::stats::{self, Control, Filter, FullStats, Measured};
use crate::compute::tensor::Mapped;
use crate::error::Result;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// An adapter's (or an engine's) overall verdict: the worst severity of warnings and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warning,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Error => "error",
        }
    }

    /// The mark the explorer's list shows.
    pub fn mark(self) -> &'static str {
        match self {
            Verdict::Ok => "✓",
            Verdict::Warning => "!",
            Verdict::Error => "✗",
        }
    }

    fn of<'a>(findings: impl Iterator<Item = &'a Finding>) -> Verdict {
        match findings.map(|f| f.severity).max() {
            Some(Severity::Error) => Verdict::Error,
            Some(Severity::Warning) => Verdict::Warning,
            _ => Verdict::Ok,
        }
    }
}

/// The stable finding codes (a contract: `check --json` `code`).
pub mod code {
    pub const NON_FINITE: &str = "non-finite";
    pub const DEAD: &str = "dead";
    pub const NEGLIGIBLE: &str = "negligible";
    pub const RANK_COLLAPSE: &str = "rank-collapse";
    pub const OUTLIER: &str = "outlier";
    pub const IMBALANCE: &str = "imbalance";
    pub const COVERAGE: &str = "coverage";
    /// The adapter's files cannot be read at all (an `error` row of `scan`).
    pub const UNREADABLE: &str = "unreadable";
    /// A safetensors file without tensors: the adapter changes nothing.
    pub const EMPTY: &str = "empty";
    /// No safetensors file: nothing could be checked.
    pub const NOT_CHECKED: &str = "not-checked";
    /// Full weights, not a LoRA adapter: only finiteness is checked.
    pub const NOT_LORA: &str = "not-lora";
    /// A module whose LoRA factors make no delta (a lone lora_A, ranks that disagree): it is not
    /// read, the rest of the adapter is.
    pub const INCOMPLETE_PAIR: &str = "incomplete-pair";
    /// Serving: the engine refuses to load the adapter.
    pub const SERVE_REFUSED: &str = "serve-refused";
    /// Serving: it loads, but part of the adapter is not applied.
    pub const SERVE_DROPPED: &str = "serve-dropped";
    /// Serving: it loads, but the served delta has another scale.
    pub const SERVE_SCALE: &str = "serve-scale";
    /// Serving: it loads only with a non-default server flag.
    pub const SERVE_FLAG: &str = "serve-flag";
    /// Serving: the engine's code says nothing either way (no verdict, only a note).
    pub const SERVE_UNVERIFIED: &str = "serve-unverified";
    /// Serving: it loads as a plain LoRA onto a base it was not trained on (PiSSA-like inits).
    pub const SERVE_WRONG_BASE: &str = "serve-wrong-base";
}

/// One finding: what, how bad, where, a sentence, and the number behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub layer: Option<usize>,
    pub target: Option<String>,
    pub expert: Option<usize>,
    pub message: String,
    pub value: Option<f64>,
    /// Serving findings: the rule's id (`vllm.dora`) and the upstream file that states it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    /// Serving findings: what the engine does (`refused`, `dropped`, …) and the version read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<&'static str>,
}

impl Finding {
    fn new(code: &'static str, severity: Severity, message: String) -> Finding {
        Finding {
            code,
            severity,
            layer: None,
            target: None,
            expert: None,
            message,
            value: None,
            rule: None,
            source: None,
            effect: None,
            versions: None,
        }
    }
    fn at(mut self, layer: Option<usize>, target: Option<&str>, expert: Option<usize>) -> Self {
        self.layer = layer;
        self.target = target.map(str::to_owned);
        self.expert = expert;
        self
    }
    fn value(mut self, v: f64) -> Self {
        self.value = v.is_finite().then_some(v);
        self
    }
}

/// Which rank each target needed: the largest rank that keeps 99 % (90 %) of any delta's energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankAdvice {
    pub target: String,
    pub rank: usize,
    pub rank_99: usize,
    pub rank_90: usize,
}

/// One serving engine's verdict on the adapter and the rules that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineVerdict {
    /// False for what is not a LoRA adapter (unreadable, empty, full weights): the engine's
    /// LoRA rules say nothing about it, and `verdict` is then no judgement.
    pub applies: bool,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

impl EngineVerdict {
    /// The verdict in words and its mark, or "not applicable" (`-`).
    pub fn label(&self) -> (&'static str, &'static str) {
        if self.applies {
            (self.verdict.mark(), self.verdict.as_str())
        } else {
            ("-", "not applicable")
        }
    }
}

/// Serving readiness for each engine (a contract: `check --json` `serving`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Serving {
    pub vllm: EngineVerdict,
    pub sglang: EngineVerdict,
}

/// The health of one adapter (a contract: one element of `check --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub id: String,
    /// The worst of `findings` and `serving`.
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub rank_advice: Vec<RankAdvice>,
    pub serving: Serving,
}

impl Health {
    /// Every finding, the data's then each engine's.
    pub fn all(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .chain(&self.serving.vllm.findings)
            .chain(&self.serving.sglang.findings)
    }

    /// Whether some finding is at least `level`.
    pub fn reaches(&self, level: Severity) -> bool {
        self.all().any(|f| f.severity >= level)
    }
}

/// Thresholds of the data findings (docs/health.md explains each).
pub mod limits {
    /// `negligible`: ‖ΔW‖_F below this fraction of the adapter's median delta norm.
    pub const NEGLIGIBLE: f64 = 1e-3;
    /// `outlier`: robust z-score (0.6745·(x − median)/MAD) above this.
    pub const OUTLIER_Z: f64 = 6.0;
    /// Smallest group (layers of a target, experts of a layer) a robust z-score is taken over.
    pub const MIN_GROUP: usize = 5;
    /// `imbalance`: ‖B‖/‖A‖ more than this many decades from the target's median ratio.
    pub const IMBALANCE_DECADES: f64 = 2.0;
    /// `rank-collapse`: E99 at most r / this, for r at least `COLLAPSE_MIN_RANK`.
    pub const COLLAPSE_DIVISOR: usize = 4;
    pub const COLLAPSE_MIN_RANK: usize = 4;
}

/// Checks an adapter: reads its factors once (in parallel, as `stats` does) and judges it.
pub fn check(a: &Adapter, ctl: &Control) -> Result<Health> {
    if a.kind == Kind::Error || (a.deltas.is_empty() && a.full.is_empty()) {
        let mut findings: Vec<Finding> = kind_finding(a).into_iter().collect();
        incomplete_pairs(a, &mut findings);
        return Ok(assemble(a, findings, vec![]));
    }
    let m = Mapped::open(a)?;
    let (measured, full) = stats::measure_on(&m, &Filter::default(), ctl)?;
    Ok(analyze(a, &measured, &full))
}

/// What is not a LoRA adapter is said so: "ok" on what was not checked would be silently wrong.
fn kind_finding(a: &Adapter) -> Option<Finding> {
    let (code, severity, msg) = match a.kind {
        Kind::Lora => return None,
        Kind::Error => (
            code::UNREADABLE,
            Severity::Error,
            a.error.clone().unwrap_or_else(|| "cannot be read".into()),
        ),
        Kind::Empty => (
            code::EMPTY,
            Severity::Error,
            "the safetensors hold no tensors: this adapter changes nothing (saved before \
             training, or the save failed)"
                .into(),
        ),
        Kind::NoSafetensors => (
            code::NOT_CHECKED,
            Severity::Warning,
            "no .safetensors file (a .bin/.pt checkpoint or an unfinished upload): nothing was \
             checked"
                .into(),
        ),
        Kind::FullWeights => (
            code::NOT_LORA,
            Severity::Info,
            "full weights, not a LoRA adapter: only the float tensors' finiteness was checked \
             (quantised blocks are not read), and the serving rules for LoRA do not apply"
                .into(),
        ),
    };
    Some(Finding::new(code, severity, msg))
}

/// Judges an adapter from deltas already measured (every delta of `a`, in its order).
pub fn analyze(a: &Adapter, measured: &[Measured], full: &[FullStats]) -> Health {
    let mut findings: Vec<Finding> = kind_finding(a).into_iter().collect();
    non_finite(measured, full, &mut findings);
    dead(measured, &mut findings);
    negligible(measured, &mut findings);
    outliers(measured, &mut findings);
    imbalance(measured, &mut findings);
    let advice = rank_advice(measured);
    rank_collapse(&advice, &mut findings);
    coverage(a, &mut findings);
    incomplete_pairs(a, &mut findings);
    let order = |t: &Option<String>| t.as_deref().map(|t| Target::parse(t).order());
    findings.sort_by(|x, y| {
        (y.severity, x.layer, order(&x.target), x.expert).cmp(&(
            x.severity,
            y.layer,
            order(&y.target),
            y.expert,
        ))
    });
    assemble(a, findings, advice)
}

fn assemble(a: &Adapter, findings: Vec<Finding>, rank_advice: Vec<RankAdvice>) -> Health {
    let serving = serving::judge(a);
    let verdict = Verdict::of(
        findings
            .iter()
            .chain(&serving.vllm.findings)
            .chain(&serving.sglang.findings),
    );
    Health {
        id: a.id.clone(),
        verdict,
        findings,
        rank_advice,
        serving,
    }
}

/// "layer 3 q_proj expert 5": where a delta is, for messages.
pub fn place(layer: Option<usize>, target: &str, expert: Option<usize>) -> String {
    let mut s = layer.map_or(String::new(), |l| format!("layer {l} "));
    s.push_str(target);
    if let Some(e) = expert {
        s.push_str(&format!(" expert {e}"));
    }
    s
}

fn non_finite(measured: &[Measured], full: &[FullStats], out: &mut Vec<Finding>) {
    for m in measured.iter().filter(|m| !m.stats.finite) {
        let d = &m.stats;
        let n = m.nonfinite_a + m.nonfinite_b;
        let what = match (m.nonfinite_a, m.nonfinite_b) {
            (0, 0) => "the scaled delta overflows".to_string(),
            (a, 0) => format!("A has {a} NaN/inf values of {}", m.len_a),
            (0, b) => format!("B has {b} NaN/inf values of {}", m.len_b),
            (a, b) => format!("A has {a} and B {b} NaN/inf values"),
        };
        out.push(
            Finding::new(
                code::NON_FINITE,
                Severity::Error,
                format!(
                    "{}: {what}; its statistics are unavailable",
                    place(d.layer, d.target.as_str(), d.expert)
                ),
            )
            .at(d.layer, Some(d.target.as_str()), d.expert)
            .value(n as f64),
        );
    }
    for f in full.iter().filter(|f| !f.fro_norm.is_finite()) {
        out.push(
            Finding::new(
                code::NON_FINITE,
                Severity::Error,
                format!("full tensor {} holds NaN/inf values", f.name),
            )
            .at(f.layer, Some(f.target.as_str()), None),
        );
    }
}

/// Dead deltas, aggregated: a whole target dead is one error, then a whole expert group of a
/// layer, then single deltas (warnings).
fn dead(measured: &[Measured], out: &mut Vec<Finding>) {
    let mut by_target: BTreeMap<&str, Vec<&Measured>> = BTreeMap::new();
    for m in measured {
        by_target
            .entry(m.stats.target.as_str())
            .or_default()
            .push(m);
    }
    for (target, ms) in by_target {
        let dead: Vec<&&Measured> = ms.iter().filter(|m| m.stats.dead).collect();
        if dead.is_empty() {
            continue;
        }
        let experts = ms.iter().any(|m| m.stats.expert.is_some());
        let what = if experts { "experts of " } else { "" };
        if dead.len() == ms.len() && ms.len() > 1 {
            out.push(
                Finding::new(
                    code::DEAD,
                    Severity::Error,
                    format!(
                        "{what}{target}: {} of {} deltas are zero (ΔW = 0): never trained or never saved",
                        dead.len(),
                        ms.len()
                    ),
                )
                .at(None, Some(target), None)
                .value(dead.len() as f64),
            );
            continue;
        }
        let mut by_layer: BTreeMap<Option<usize>, (usize, Vec<&Measured>)> = BTreeMap::new();
        for m in &ms {
            let e = by_layer.entry(m.stats.layer).or_default();
            e.0 += 1;
            if m.stats.dead {
                e.1.push(m);
            }
        }
        for (layer, (total, dead)) in by_layer {
            if experts && total > 1 && dead.len() == total {
                out.push(
                    Finding::new(
                        code::DEAD,
                        Severity::Error,
                        format!(
                            "{}: all {total} experts are zero (ΔW = 0): never trained or never saved",
                            place(layer, target, None)
                        ),
                    )
                    .at(layer, Some(target), None)
                    .value(total as f64),
                );
                continue;
            }
            for m in dead {
                let d = &m.stats;
                let which = if m.norm_b == 0.0 { "B" } else { "A" };
                out.push(
                    Finding::new(
                        code::DEAD,
                        Severity::Warning,
                        format!(
                            "{}: {which} is exactly zero (ΔW = 0)",
                            place(d.layer, d.target.as_str(), d.expert)
                        ),
                    )
                    .at(d.layer, Some(d.target.as_str()), d.expert)
                    .value(0.0),
                );
            }
        }
    }
}

/// Deltas that count: finite and not dead.
fn live(measured: &[Measured]) -> impl Iterator<Item = &Measured> {
    measured.iter().filter(|m| m.stats.finite && !m.stats.dead)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn negligible(measured: &[Measured], out: &mut Vec<Finding>) {
    let Some(med) = median_norm(measured) else {
        return;
    };
    for m in live(measured).filter(|m| m.stats.fro_norm < limits::NEGLIGIBLE * med) {
        let d = &m.stats;
        out.push(
            Finding::new(
                code::NEGLIGIBLE,
                Severity::Warning,
                format!(
                    "{}: ‖ΔW‖ = {:.3e} is below {} of the adapter's median delta norm {:.3e}",
                    place(d.layer, d.target.as_str(), d.expert),
                    d.fro_norm,
                    limits::NEGLIGIBLE,
                    med
                ),
            )
            .at(d.layer, Some(d.target.as_str()), d.expert)
            .value(d.fro_norm),
        );
    }
}

/// Robust z-scores of ‖ΔW‖_F over layers (per target, and per expert of a target) and over
/// the experts of one layer; each delta is reported once, with its largest z.
fn outliers(measured: &[Measured], out: &mut Vec<Finding>) {
    type Group<'a> = (String, Vec<&'a Measured>);
    let mut groups: BTreeMap<(u8, Option<usize>, Target, Option<usize>), Group> = BTreeMap::new();
    for m in live(measured) {
        let d = &m.stats;
        let (over_layers, over_experts) = match d.expert {
            None => ((0, None, d.target.clone(), None), None),
            Some(e) => (
                (1, None, d.target.clone(), Some(e)),
                Some((2, d.layer, d.target.clone(), None)),
            ),
        };
        let label = match d.expert {
            None => format!("{} over layers", d.target),
            Some(e) => format!("{} expert {e} over layers", d.target),
        };
        groups
            .entry(over_layers)
            .or_insert((label, vec![]))
            .1
            .push(m);
        if let Some(k) = over_experts {
            let label = format!("the experts of {}", place(d.layer, d.target.as_str(), None));
            groups.entry(k).or_insert((label, vec![])).1.push(m);
        }
    }
    let mut best: BTreeMap<DeltaKey, (f64, f64, String)> = BTreeMap::new();
    for (label, ms) in groups.values() {
        if ms.len() < limits::MIN_GROUP {
            continue;
        }
        let mut v: Vec<f64> = ms.iter().map(|m| m.stats.fro_norm).collect();
        let med = median(&mut v).unwrap_or(0.0);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev).unwrap_or(0.0);
        if mad <= 0.0 {
            continue;
        }
        for m in ms {
            let z = 0.6745 * (m.stats.fro_norm - med) / mad;
            if z > limits::OUTLIER_Z {
                let k = m.stats.key();
                if best.get(&k).is_none_or(|b| b.0 < z) {
                    best.insert(k, (z, med, label.clone()));
                }
            }
        }
    }
    for m in live(measured) {
        let d = &m.stats;
        if let Some((z, med, label)) = best.get(&d.key()) {
            out.push(
                Finding::new(
                    code::OUTLIER,
                    Severity::Warning,
                    format!(
                        "{}: ‖ΔW‖ = {:.4} is {z:.1} robust SDs above the median {med:.4} of {label}",
                        place(d.layer, d.target.as_str(), d.expert),
                        d.fro_norm
                    ),
                )
                .at(d.layer, Some(d.target.as_str()), d.expert)
                .value(d.fro_norm),
            );
        }
    }
}

/// The adapter's median ‖ΔW‖_F over deltas that count.
fn median_norm(measured: &[Measured]) -> Option<f64> {
    let mut norms: Vec<f64> = live(measured).map(|m| m.stats.fro_norm).collect();
    median(&mut norms)
}

/// Unbalanced factors of deltas that are not negligible (a negligible delta's tiny factor is
/// reported once, as negligible).
fn imbalance(measured: &[Measured], out: &mut Vec<Finding>) {
    let floor = median_norm(measured).unwrap_or(0.0) * limits::NEGLIGIBLE;
    let ratio =
        |m: &Measured| (m.norm_a > 0.0 && m.norm_b > 0.0).then(|| (m.norm_b / m.norm_a).log10());
    let mut by_target: BTreeMap<&str, Vec<(&Measured, f64)>> = BTreeMap::new();
    for m in live(measured).filter(|m| m.stats.fro_norm >= floor) {
        if let Some(r) = ratio(m).filter(|r| r.is_finite()) {
            by_target
                .entry(m.stats.target.as_str())
                .or_default()
                .push((m, r));
        }
    }
    for (target, ms) in by_target {
        if ms.len() < limits::MIN_GROUP {
            continue;
        }
        let mut v: Vec<f64> = ms.iter().map(|x| x.1).collect();
        let med = median(&mut v).unwrap_or(0.0);
        for (m, r) in ms {
            if (r - med).abs() > limits::IMBALANCE_DECADES {
                let d = &m.stats;
                out.push(
                    Finding::new(
                        code::IMBALANCE,
                        Severity::Info,
                        format!(
                            "{}: ‖B‖/‖A‖ = {:.3e}, {:.1} decades from the median {:.3e} of {target}",
                            place(d.layer, d.target.as_str(), d.expert),
                            10f64.powf(r),
                            (r - med).abs(),
                            10f64.powf(med)
                        ),
                    )
                    .at(d.layer, Some(d.target.as_str()), d.expert)
                    .value(10f64.powf(r)),
                );
            }
        }
    }
}

/// Per target (in table order): r, and the ranks that keep 99 % and 90 % of every delta's energy.
pub fn rank_advice(measured: &[Measured]) -> Vec<RankAdvice> {
    let mut by: BTreeMap<&Target, RankAdvice> = BTreeMap::new();
    for m in live(measured) {
        let d = &m.stats;
        let e = by.entry(&d.target).or_insert(RankAdvice {
            target: d.target.to_string(),
            rank: 0,
            rank_99: 0,
            rank_90: 0,
        });
        e.rank = e.rank.max(d.rank);
        e.rank_99 = e.rank_99.max(d.energy_rank_99);
        e.rank_90 = e.rank_90.max(d.energy_rank_90);
    }
    by.into_values().collect()
}

fn rank_collapse(advice: &[RankAdvice], out: &mut Vec<Finding>) {
    for a in advice {
        if a.rank >= limits::COLLAPSE_MIN_RANK && a.rank_99 * limits::COLLAPSE_DIVISOR <= a.rank {
            out.push(
                Finding::new(
                    code::RANK_COLLAPSE,
                    Severity::Info,
                    format!(
                        "{}: r = {} but rank {} keeps 99 % of every delta's energy (rank {} keeps 90 %): capacity unused",
                        a.target, a.rank, a.rank_99, a.rank_90
                    ),
                )
                .at(None, Some(a.target.as_str()), None)
                .value(a.rank_99 as f64),
            );
        }
    }
}

/// The module path without PEFT's trailing `base_layer` wrappers.
fn unwrapped(module: &str) -> &str {
    let mut m = module;
    while let Some(s) = m.strip_suffix(".base_layer") {
        m = s;
    }
    m
}

/// Experts missing in a layer while others have LoRA; config entries that matched nothing;
/// deltas the config does not list.
fn coverage(a: &Adapter, out: &mut Vec<Finding>) {
    if a.kind != Kind::Lora {
        return;
    }
    if let Some(n) = a.experts() {
        for ((layer, target), have) in expert_sets(a) {
            let missing: Vec<usize> = (0..n).filter(|e| !have.contains(e)).collect();
            if missing.is_empty() {
                continue;
            }
            out.push(
                Finding::new(
                    code::COVERAGE,
                    Severity::Warning,
                    format!(
                        "{}: {} of {n} experts have no LoRA ({}) while the others have it",
                        place(layer, &target, None),
                        missing.len(),
                        list(&missing)
                    ),
                )
                .at(layer, Some(&target), missing.first().copied())
                .value(missing.len() as f64),
            );
        }
    }
    let Some(cfg) = a.config.config() else {
        return;
    };
    // A module whose pair is incomplete was saved: `incomplete-pair` says what is wrong with it.
    let modules: BTreeSet<&str> = a
        .tensors
        .iter()
        .filter(|t| t.name.role != Role::Unknown)
        .map(|t| unwrapped(&t.name.module))
        .chain(a.incomplete.iter().map(|i| unwrapped(&i.module)))
        .collect();
    let everything = |t: &str| matches!(t, "all-linear" | "all");
    // The config's keys, each compiled once when it was read (never once per module).
    let targets = &cfg.target_modules;
    // A string target_modules is a regex over whole paths (PEFT): not checked here.
    let list_form = targets.entries().len() != 1
        || !targets.entries()[0]
            .0
            .chars()
            .any(|c| "\\*?()|[]{}^$+".contains(c));
    if list_form {
        for (i, t) in targets.keys().enumerate().filter(|(_, t)| !everything(t)) {
            if !modules.iter().any(|m| targets.matches(i, m)) {
                out.push(Finding::new(
                    code::COVERAGE,
                    Severity::Warning,
                    format!("adapter_config.json target_modules entry '{t}' matched no tensor: that module was not trained or not saved"),
                ).at(None, Some(t), None));
            }
        }
    }
    for (i, (prefix, param)) in cfg.wrapped_parameters.entries().iter().enumerate() {
        let hit = a.deltas.iter().any(|d| {
            let m = unwrapped(&d.module);
            d.expert_layout == Some(ExpertLayout::PerExpert)
                && (d.target == *param
                    || (param == "gate_up_proj"
                        && matches!(d.target.as_str(), "gate_proj" | "up_proj")))
                && (prefix.is_empty()
                    || m == prefix
                    || m.ends_with(&format!(".{prefix}"))
                    || cfg.wrapped_parameters.matches(i, m))
        });
        if !hit {
            let name = if prefix.is_empty() {
                param.clone()
            } else {
                format!("{prefix}.{param}")
            };
            out.push(
                Finding::new(
                    code::COVERAGE,
                    Severity::Warning,
                    format!("adapter_config.json target_parameters entry '{name}' matched no tensor: those experts were not trained or not saved"),
                )
                .at(None, Some(param), None),
            );
        }
    }
    // Deltas the config does not explain, for PEFT-style configs that list their modules.
    let peft_named = |d: &crate::adapter::layout::Delta| {
        matches!(
            a.tensors[d.a.tensor].name.format,
            Some(Format::Peft | Format::Unsloth)
        )
    };
    if list_form && !targets.is_empty() && !targets.keys().any(everything) {
        let unexplained: Vec<&crate::adapter::layout::Delta> = a
            .deltas
            .iter()
            .filter(|d| peft_named(d) && d.expert_layout != Some(ExpertLayout::PerExpert))
            .filter(|d| {
                let m = unwrapped(&d.module);
                !(0..targets.entries().len()).any(|i| targets.matches(i, m))
            })
            .collect();
        if let Some(d) = unexplained.first() {
            out.push(
                Finding::new(
                    code::COVERAGE,
                    Severity::Warning,
                    format!(
                        "{} deltas on modules that adapter_config.json's target_modules does not list (e.g. {})",
                        unexplained.len(),
                        d.module
                    ),
                )
                .at(d.layer, Some(d.target.as_str()), d.expert)
                .value(unexplained.len() as f64),
            );
        }
    }
}

/// The experts with LoRA of each (layer, expert target), for layouts that can leave some out.
pub(crate) fn expert_sets(a: &Adapter) -> BTreeMap<(Option<usize>, String), BTreeSet<usize>> {
    let mut sets: BTreeMap<(Option<usize>, String), BTreeSet<usize>> = BTreeMap::new();
    for d in &a.deltas {
        if let (Some(e), true) = (d.expert, d.target.is_expert()) {
            sets.entry((d.layer, d.target.to_string()))
                .or_default()
                .insert(e);
        }
    }
    sets
}

/// Modules whose factors make no delta (`adapter::layout::Incomplete`): one error each, named.
/// A GGUF quantisation lorascope does not decode is no defect of the adapter: info.
fn incomplete_pairs(a: &Adapter, out: &mut Vec<Finding>) {
    for i in &a.incomplete {
        let target = i.target.as_str();
        let severity = if i.problem == crate::adapter::layout::PairProblem::Quantisation {
            Severity::Info
        } else {
            Severity::Error
        };
        out.push(
            Finding::new(
                code::INCOMPLETE_PAIR,
                severity,
                format!(
                    "{}: module {}: {}; this module's LoRA is not read (its tensors are listed \
                     as unknown), the rest of the adapter is",
                    place(i.layer, target, i.expert),
                    i.module,
                    i.why()
                ),
            )
            .at(i.layer, Some(target), i.expert),
        );
    }
}

/// "1, 2, 5 …" (at most 8 numbers).
pub(crate) fn list(v: &[usize]) -> String {
    let mut s: Vec<String> = v.iter().take(8).map(|x| x.to_string()).collect();
    if v.len() > 8 {
        s.push("…".into());
    }
    s.join(", ")
}
