//! `stats` and `compare`: the math core from the command line.

use super::table::Table;
use super::{print_json, ReadOpts};
use crate::adapter::catalog::Catalog;
use crate::compute::compare;
use crate::compute::stats::{self, Control, Filter};
use crate::view::text;
use anyhow::Result;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// An id from `scan` or a path
    pub adapter: String,
    #[arg(long)]
    pub json: bool,
    /// Only this target (q_proj, gate_up_proj, router, ...)
    #[arg(long)]
    pub target: Option<String>,
    /// Only this layer
    #[arg(long)]
    pub layer: Option<usize>,
    /// Only this expert
    #[arg(long)]
    pub expert: Option<usize>,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub read: ReadOpts,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    pub a: String,
    pub b: String,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub read: ReadOpts,
}

/// A progress line on stderr, only when stderr is a terminal and the work takes a while.
pub struct StderrProgress {
    start: Instant,
    last: Mutex<Instant>,
    enabled: bool,
    label: &'static str,
}

impl StderrProgress {
    pub fn new(label: &'static str) -> StderrProgress {
        StderrProgress {
            start: Instant::now(),
            last: Mutex::new(Instant::now()),
            enabled: std::io::stderr().is_terminal(),
            label,
        }
    }
    pub fn update(&self, done: usize, total: usize) {
        if !self.enabled || self.start.elapsed() < Duration::from_millis(300) {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_millis(100) || done == total {
            *last = Instant::now();
            let _ = write!(std::io::stderr(), "\r{} {done}/{total}", self.label);
        }
    }
    pub fn finish(&self) {
        if self.enabled && self.start.elapsed() >= Duration::from_millis(300) {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

pub fn cmd_stats(ctx: &Catalog, args: StatsArgs) -> Result<ExitCode> {
    let a = ctx.find_usable(&args.adapter, args.read.layout())?;
    let filter = Filter {
        target: args.target.clone(),
        layer: args.layer,
        expert: args.expert,
    };
    let progress = StderrProgress::new("computing");
    let cb = |d, t| progress.update(d, t);
    let ctl = Control {
        threads: args.threads,
        progress: Some(&cb),
        cancel: None,
    };
    let st = stats::compute(&a, &filter, &ctl)?;
    progress.finish();
    if st.deltas.is_empty() && st.full_tensors.is_empty() {
        anyhow::bail!("{}: no delta matches the selection", a.id);
    }
    if args.json {
        return print_json(&st).map(|_| ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "LAYER>",
        "TARGET",
        "EXPERT>",
        "RANK>",
        "SCALE>",
        "FROBENIUS>",
        "SPECTRAL>",
        "ERANK>",
        "SRANK>",
        "NRANK>",
        "E90>",
        "E99>",
    ]);
    for d in &st.deltas {
        if !d.finite {
            // NaN/inf factors or an overflow: say so instead of numbers.
            let mut row = vec![
                text::opt(d.layer),
                d.target.to_string(),
                text::opt(d.expert),
                d.rank.to_string(),
                text::num(d.scale),
                "non-finite".to_string(),
                "non-finite".to_string(),
            ];
            row.extend(std::iter::repeat_n("-".to_string(), 5));
            t.row(row);
            continue;
        }
        t.row(vec![
            text::opt(d.layer),
            d.target.to_string(),
            text::opt(d.expert),
            d.rank.to_string(),
            text::num(d.scale),
            text::num(d.fro_norm),
            text::num(d.spectral_norm),
            format!("{:.2}", d.effective_rank),
            format!("{:.2}", d.stable_rank),
            d.numerical_rank.to_string(),
            d.energy_rank_90.to_string(),
            d.energy_rank_99.to_string(),
        ]);
    }
    out!("{}", t.render());
    if !st.full_tensors.is_empty() {
        let mut t = Table::new(&["FULL TENSOR", "SHAPE", "FROBENIUS>", "SPECTRAL>"]);
        for f in &st.full_tensors {
            t.row(vec![
                text::short_name(&f.name).to_string(),
                format!("{:?}", f.shape),
                text::num(f.fro_norm),
                text::opt(f.spectral_norm.map(text::num)),
            ]);
        }
        out!("\n{}", t.render());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_compare(ctx: &Catalog, args: CompareArgs) -> Result<ExitCode> {
    let a = ctx.find_usable(&args.a, args.read.layout())?;
    let b = ctx.find_usable(&args.b, args.read.layout())?;
    let progress = StderrProgress::new("comparing");
    let cb = |d, t| progress.update(d, t);
    let ctl = Control {
        threads: args.threads,
        progress: Some(&cb),
        cancel: None,
    };
    let c = compare::compare(&a, &b, &ctl)?;
    progress.finish();
    if args.json {
        return print_json(&c).map(|_| ExitCode::SUCCESS);
    }
    outln!("a: {}\nb: {}", c.a, c.b);
    outln!(
        "{} matched deltas, {} only in a, {} only in b\n",
        c.pairs.len(),
        c.only_a.len(),
        c.only_b.len()
    );
    let mut t = Table::new(&[
        "TARGET",
        "PAIRS>",
        "MEAN COSINE>",
        "MEAN SUBSPACE>",
        "NORM RATIO b/a>",
    ]);
    for s in compare::by_target(&c) {
        t.row(vec![
            s.target.to_string(),
            s.pairs.to_string(),
            text::opt(s.mean_cosine.map(|x| format!("{x:.4}"))),
            text::opt(s.mean_subspace_similarity.map(|x| format!("{x:.4}"))),
            text::opt(s.mean_norm_ratio.map(|x| format!("{x:.3}"))),
        ]);
    }
    out!("{}", t.render());
    let bad: Vec<_> = c
        .pairs
        .iter()
        .filter(|p| p.finite_a && p.finite_b)
        .filter_map(|p| p.note.as_ref())
        .collect();
    if let Some(n) = bad.first() {
        outln!("\n{} pairs not comparable, e.g. {n}", bad.len());
    }
    let nonfinite: Vec<_> = c
        .pairs
        .iter()
        .filter(|p| !(p.finite_a && p.finite_b))
        .collect();
    if let Some(p) = nonfinite.first() {
        outln!(
            "\n{} pairs with non-finite values (left out of the means), e.g. layer {} {}{}: {}",
            nonfinite.len(),
            text::opt(p.layer),
            p.target,
            p.expert.map_or(String::new(), |e| format!(" expert {e}")),
            p.note.as_deref().unwrap_or("non-finite")
        );
    }
    for (label, keys) in [("only in a", &c.only_a), ("only in b", &c.only_b)] {
        let targets: Vec<&str> = keys.iter().map(|k| k.target.as_str()).collect();
        if !keys.is_empty() {
            outln!(
                "{label}: {} deltas ({})",
                keys.len(),
                text::compact_targets(&targets)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
