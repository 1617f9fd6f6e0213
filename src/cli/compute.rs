//! `stats` and `compare`: the math core from the command line.

use super::table::Table;
use super::{print_json, ReadOpts};
use crate::adapter::catalog::Catalog;
use crate::base::{self, stats as base_stats};
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
    /// Set every delta against the base model: the one the adapter's config names (found in
    /// the cache), or ID|PATH. Adds base_fro_norm, relative_change, relative_spectral,
    /// amplification and alignment
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "ID|PATH")]
    pub base: Option<String>,
    /// With the base: intruder dimensions of every delta (slow: a dense SVD per base weight)
    #[arg(long)]
    pub deep: bool,
    /// Intruder dimensions: how many top singular vectors of W + ΔW are examined
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub intruder_k: usize,
    /// Intruder dimensions: the cosine threshold ε
    #[arg(long, default_value_t = 0.5, value_name = "EPS")]
    pub intruder_epsilon: f64,
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
    // --deep alone looks for the base the adapter's config names.
    let wanted = args.base.clone().or_else(|| args.deep.then(String::new));
    if let (crate::adapter::Kind::FullWeights, Some(named)) = (a.kind, &wanted) {
        return merged_stats(ctx, &a, &st, named, &filter, &ctl, args.json);
    }
    if st.deltas.is_empty() && st.full_tensors.is_empty() {
        if let (true, Some(i)) = (a.deltas.is_empty(), a.incomplete.first()) {
            anyhow::bail!(
                "{}: no delta to compute: its LoRA modules are incomplete (e.g. {}: {})",
                a.id,
                i.module,
                i.why()
            );
        }
        anyhow::bail!("{}: no delta matches the selection", a.id);
    }
    // The base: its statistics, or the note saying why there are none (the rest is unchanged).
    let deep = args.deep.then_some(base_stats::IntruderOpts {
        k: args.intruder_k,
        epsilon: args.intruder_epsilon,
    });
    let base = match &wanted {
        None => None,
        Some(named) => {
            let named = (!named.is_empty()).then_some(named.as_str());
            Some(match base::session_for(&a, named, &ctx.roots()) {
                Ok(session) => {
                    let progress = StderrProgress::new("against the base");
                    let cb = |d, t| progress.update(d, t);
                    let ctl = Control {
                        progress: Some(&cb),
                        ..ctl
                    };
                    // A base that opened but cannot be read through is a note too: the
                    // adapter's own statistics are computed and still shown.
                    let r = base_stats::compute_deep(&session, &a, &filter, &ctl, deep);
                    progress.finish();
                    r.map_err(|e| format!("no statistics against the base model ({e})"))
                }
                Err(note) => Err(note),
            })
        }
    };
    if args.json {
        return match &base {
            None => print_json(&st),
            Some(b) => print_json(&with_base_json(&st, b, named_base(&a, &args), args.deep)?),
        }
        .map(|_| ExitCode::SUCCESS);
    }
    let report = match &base {
        Some(Err(note)) => {
            eprintln!("note: {note}; showing the adapter's own statistics");
            None
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let mut headers = vec![
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
    ];
    if report.is_some() {
        headers.extend([
            "BASE ‖W‖>",
            "RELATIVE>",
            "REL SPECTRAL>",
            "AMPLIFICATION>",
            "ALIGNMENT>",
        ]);
        if args.deep {
            headers.push("INTRUDERS>");
        }
    }
    // DoRA adapters: the relative change of the exact update (magnitude included).
    let dora = report.is_some_and(|r| r.deltas.iter().any(|b| b.dora.is_some()));
    if dora {
        headers.push("DORA RELATIVE>");
    }
    let mut t = Table::new(&headers);
    let base_cells = |i: usize| -> Vec<String> {
        let Some(r) = report else { return vec![] };
        let b = &r.deltas[i];
        let f = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
        vec![
            b.base_fro_norm.map_or("-".to_string(), text::num),
            f(b.relative_change, 4),
            f(b.relative_spectral, 4),
            f(b.amplification, 2),
            f(b.alignment, 3),
        ]
        .into_iter()
        .chain(args.deep.then(|| {
            b.intruders
                .as_ref()
                .map_or("-".to_string(), |i| format!("{}/{}", i.count, i.k))
        }))
        .chain(dora.then(|| f(b.dora.as_ref().and_then(|x| x.relative_change), 4)))
        .collect()
    };
    for (i, d) in st.deltas.iter().enumerate() {
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
            row.extend(base_cells(i));
            t.row(row);
            continue;
        }
        let mut row = vec![
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
        ];
        row.extend(base_cells(i));
        t.row(row);
    }
    out!("{}", t.render());
    if let Some(r) = report {
        outln!("\nbase: {} ({})", r.base, r.path);
        for n in &r.notes {
            outln!("note: {n}");
        }
    }
    full_tensor_table(&st);
    Ok(ExitCode::SUCCESS)
}

/// The full tensors' norms (router, norms, biases) after the deltas.
fn full_tensor_table(st: &stats::AdapterStats) {
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
}

/// `stats MERGED --base`: every weight of a merged model minus the same weight of its base
/// (docs/base.md), then the full tensors as without `--base`. Without a usable base, a note
/// and the model's own statistics.
fn merged_stats(
    ctx: &Catalog,
    a: &crate::adapter::Adapter,
    st: &stats::AdapterStats,
    named: &str,
    filter: &Filter,
    ctl: &Control,
    json: bool,
) -> Result<ExitCode> {
    let named = (!named.is_empty()).then_some(named);
    let dir = if a.path.is_dir() {
        a.path.clone()
    } else {
        a.path.parent().map(Into::into).unwrap_or_default()
    };
    let report = base::session_for(a, named, &ctx.roots()).and_then(|session| {
        let merged = base::Base::open(&a.id, &dir)?;
        let progress = StderrProgress::new("merged minus base");
        let cb = |d, t| progress.update(d, t);
        let ctl = Control {
            progress: Some(&cb),
            ..*ctl
        };
        let r =
            base::merged::compute(&merged, &session.base, filter, &ctl).map_err(|e| e.to_string());
        progress.finish();
        r
    });
    if json {
        let mut v = serde_json::to_value(st)?;
        match &report {
            Ok(r) => {
                v["base"] = serde_json::json!({"id": r.base, "path": r.path, "found": true, "notes": r.notes});
                v["merged"] = serde_json::json!({"compared": r.compared, "changed": r.changed, "weights": r.weights});
            }
            Err(note) => {
                v["base"] = serde_json::json!({"id": named.map(str::to_string).or_else(|| a.base_model()), "path": null, "found": false, "notes": [note]});
                v["merged"] = serde_json::Value::Null;
            }
        }
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &report {
        Err(note) => eprintln!("note: {note}; showing the model's own statistics"),
        Ok(r) => {
            let mut t = Table::new(&[
                "LAYER>",
                "TARGET",
                "EXPERT>",
                "SHAPE",
                "STORED",
                "‖ΔW‖_F>",
                "BASE ‖W‖>",
                "RELATIVE>",
                "SPECTRAL>",
                "ERANK>",
                "SRANK>",
            ]);
            for w in &r.weights {
                let mark = if w.approximate { "~" } else { "" };
                t.row(vec![
                    w.layer.to_string(),
                    w.target.to_string(),
                    text::opt(w.expert),
                    format!("{}×{}", w.shape[0], w.shape[1]),
                    format!("{}/{}", w.merged_storage, w.base_storage),
                    text::num(w.fro_norm),
                    text::num(w.base_fro_norm),
                    w.relative_change
                        .map_or("-".to_string(), |x| format!("{x:.4}")),
                    text::num(w.spectral_norm),
                    format!("{mark}{:.2}", w.effective_rank),
                    format!("{:.2}", w.stable_rank),
                ]);
            }
            out!("{}", t.render());
            outln!(
                "\nmerged minus base: {} of {} weights changed; base: {} ({})",
                r.changed,
                r.compared,
                r.base,
                r.path
            );
            for n in &r.notes {
                outln!("note: {n}");
            }
        }
    }
    full_tensor_table(st);
    Ok(ExitCode::SUCCESS)
}

/// The base the user named, else the one the adapter's config names.
fn named_base(a: &crate::adapter::Adapter, args: &StatsArgs) -> Option<String> {
    args.base
        .clone()
        .filter(|b| !b.is_empty())
        .or_else(|| a.base_model())
}

/// `stats --json` with the base: each delta gains the base fields (null where the base lacks
/// the weight, or no base was found) and the top level a `base` object with the notes.
fn with_base_json(
    st: &stats::AdapterStats,
    base: &std::result::Result<base_stats::BaseReport, String>,
    named: Option<String>,
    deep: bool,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(st)?;
    let empty = base_stats::BaseDeltaStats::default();
    if let Some(ds) = v.get_mut("deltas").and_then(|d| d.as_array_mut()) {
        for (i, d) in ds.iter_mut().enumerate() {
            let b = match base {
                Ok(r) => &r.deltas[i],
                Err(_) => &empty,
            };
            if let (Some(obj), serde_json::Value::Object(extra)) =
                (d.as_object_mut(), serde_json::to_value(b)?)
            {
                obj.extend(extra);
                if deep && !obj.contains_key("intruders") {
                    obj.insert("intruders".into(), serde_json::Value::Null);
                }
            }
        }
    }
    v["base"] = match base {
        Ok(r) => serde_json::json!({"id": r.base, "path": r.path, "found": true, "notes": r.notes}),
        Err(note) => {
            serde_json::json!({"id": named, "path": null, "found": false, "notes": [note]})
        }
    };
    Ok(v)
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
    if let Some(side) = c.pairs.iter().find_map(|p| p.joined) {
        let n = c.pairs.iter().filter(|p| p.joined.is_some()).count();
        let other = if side == "a" { "b" } else { "a" };
        outln!(
            "\n{n} gate_up pairs: {side}'s gate_proj and up_proj joined into {other}'s fused gate_up"
        );
    }
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
