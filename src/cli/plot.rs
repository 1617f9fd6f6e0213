//! `plot`: statistics (and a comparison) drawn to a PNG file.

use super::compute::StderrProgress;
use super::ReadOpts;
use crate::adapter::catalog::Catalog;
use crate::base::{self, stats as base_stats};
use crate::compute::compare;
use crate::compute::stats::{self, Control, Filter};
use crate::plot::{self, CompareWith, Metric, PlotKind, PlotOptions};
use crate::view::grid::StepMetric;
use crate::view::text;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// An id from `scan` or a path; for `--kind timeline`, a training run (its folder or id)
    #[arg(value_name = "ADAPTER|RUN")]
    pub adapter: String,
    /// The figure to draw
    #[arg(long, value_enum, default_value = "layers")]
    pub kind: PlotKind,
    /// The PNG file to write (replaced if it exists)
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// A second adapter: both side by side on one scale, plus their cosine similarity
    #[arg(long, value_name = "B")]
    pub compare: Option<String>,
    /// Only this target; for `experts`, which expert target (default: the first present)
    #[arg(long)]
    pub target: Option<String>,
    /// Only this layer
    #[arg(long)]
    pub layer: Option<usize>,
    /// What the heatmap cells show (growth, e99, similarity: --kind timeline only)
    #[arg(long, value_enum, default_value = "fro")]
    pub metric: MetricArg,
    /// Width in pixels (default 1200, 1800 with --compare)
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels (default 800)
    #[arg(long)]
    pub height: Option<u32>,
    /// The base model for --metric relative|amplification|alignment (default: the one the
    /// adapter's config names, found in the cache)
    #[arg(long, value_name = "ID|PATH")]
    pub base: Option<String>,
    /// Worker threads for the statistics (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub read: ReadOpts,
}

/// `--kind` takes the figure's names (the library type stays free of clap's derive).
impl clap::ValueEnum for PlotKind {
    fn value_variants<'a>() -> &'a [Self] {
        &PlotKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()).help(self.help()))
    }
}

/// `--metric`: an adapter's [`Metric`]s, and the [`StepMetric`]s only a timeline has (`fro`,
/// `spectral` and `erank` are both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricArg {
    Delta(Metric),
    Step(StepMetric),
}

const METRIC_ARGS: [MetricArg; 10] = [
    MetricArg::Delta(Metric::Fro),
    MetricArg::Delta(Metric::Spectral),
    MetricArg::Delta(Metric::Erank),
    MetricArg::Delta(Metric::Srank),
    MetricArg::Delta(Metric::Relative),
    MetricArg::Delta(Metric::Amplification),
    MetricArg::Delta(Metric::Alignment),
    MetricArg::Step(StepMetric::Growth),
    MetricArg::Step(StepMetric::E99),
    MetricArg::Step(StepMetric::SimilarityPrev),
];

impl MetricArg {
    fn as_str(self) -> &'static str {
        match self {
            MetricArg::Delta(m) => m.as_str(),
            MetricArg::Step(m) => m.as_str(),
        }
    }

    /// The timeline's metric of this name.
    fn step(self) -> Result<StepMetric> {
        Ok(match self {
            MetricArg::Step(m) => m,
            MetricArg::Delta(Metric::Fro) => StepMetric::Fro,
            MetricArg::Delta(Metric::Spectral) => StepMetric::Spectral,
            MetricArg::Delta(Metric::Erank) => StepMetric::Erank,
            MetricArg::Delta(m) => bail!(
                "--metric {}: a timeline shows fro, growth, spectral, erank, e99 or similarity",
                m.as_str()
            ),
        })
    }

    /// The adapter's metric of this name.
    fn delta(self) -> Result<Metric> {
        match self {
            MetricArg::Delta(m) => Ok(m),
            MetricArg::Step(m) => bail!(
                "--metric {}: a training run's metric, for --kind timeline only",
                m.as_str()
            ),
        }
    }
}

impl clap::ValueEnum for MetricArg {
    fn value_variants<'a>() -> &'a [Self] {
        &METRIC_ARGS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            MetricArg::Delta(m) => m.help(),
            MetricArg::Step(StepMetric::Growth) => {
                "Change of ‖ΔW‖_F since the previous checkpoint (--kind timeline)"
            }
            MetricArg::Step(StepMetric::E99) => "99 %-energy rank (--kind timeline)",
            MetricArg::Step(_) => {
                "Subspace similarity to the previous checkpoint (--kind timeline)"
            }
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// `plot RUN --kind timeline`: the run measured (as `timeline` does, with its cache) and drawn.
fn plot_timeline(ctx: &Catalog, args: PlotArgs) -> Result<ExitCode> {
    let step_metric = args.metric.step()?;
    if args.compare.is_some() || args.base.is_some() {
        bail!("--kind timeline draws one training run: no --compare or --base");
    }
    let opts = PlotOptions {
        kind: PlotKind::Timeline,
        step_metric,
        target: args.target.clone(),
        layer: args.layer,
        width: args.width,
        height: args.height,
        ..PlotOptions::default()
    };
    opts.size(false)?;
    let tl =
        super::timeline::measure_run(ctx, &args.adapter, &Filter::default(), args.threads, false)?;
    let r = plot::write_timeline_png(&tl, &opts, &args.out)?;
    outln!("wrote {} ({}×{})", args.out.display(), r.width, r.height);
    Ok(ExitCode::SUCCESS)
}

pub fn cmd_plot(ctx: &Catalog, args: PlotArgs) -> Result<ExitCode> {
    if args.kind == PlotKind::Timeline {
        return plot_timeline(ctx, args);
    }
    let metric = args.metric.delta()?;
    let opts = PlotOptions {
        kind: args.kind,
        metric,
        target: args.target.clone(),
        layer: args.layer,
        width: args.width,
        height: args.height,
        base: None,
        step_metric: StepMetric::default(),
    };
    // Check the size and the destination before any computing.
    opts.size(args.compare.is_some())?;
    let a = ctx.find_usable(&args.adapter, args.read.layout())?;
    let b = match &args.compare {
        Some(id) => Some(ctx.find_usable(id, args.read.layout())?),
        None => None,
    };
    // A missing layer would otherwise reach the plot as "no deltas"; say which layers exist.
    if let Some(l) = args.layer {
        if !std::iter::once(&a)
            .chain(b.as_ref())
            .any(|x| x.layer_indices().contains(&l))
        {
            anyhow::bail!(
                "{}: no delta at layer {l} (layers: {})",
                a.id,
                text::layers(&a.layer_indices())
            );
        }
    }
    // Every target is computed (rows and columns show what the adapter has); the layer narrows.
    let filter = Filter {
        layer: args.layer,
        ..Filter::default()
    };
    let progress = StderrProgress::new("computing");
    let cb = |d, t| progress.update(d, t);
    let ctl = Control {
        threads: args.threads,
        progress: Some(&cb),
        cancel: None,
    };
    let sa = stats::compute(&a, &filter, &ctl)?;
    let (sb, cmp) = match &b {
        Some(b) => (
            Some(stats::compute(b, &filter, &ctl)?),
            Some(compare::compare(&a, b, &ctl)?),
        ),
        None => (None, None),
    };
    progress.finish();
    let mut opts = opts;
    if metric.needs_base() {
        // The base named by the adapter's config (or --base), found in the cache.
        let named = args.base.as_deref().filter(|b| !b.is_empty());
        let session = base::session_for(&a, named, &ctx.roots())
            .map_err(|note| anyhow::anyhow!("--metric {}: {note}", metric.as_str()))?;
        let progress = StderrProgress::new("against the base");
        let cb = |d, t| progress.update(d, t);
        let ctl = Control {
            progress: Some(&cb),
            ..ctl
        };
        let r = base_stats::compute(&session, &a, &filter, &ctl)?;
        progress.finish();
        opts.base = Some(std::sync::Arc::new(r));
    }
    let with = sb.as_ref().zip(cmp.as_ref()).map(|(s, c)| CompareWith {
        stats: s,
        comparison: c,
    });
    let r = plot::write_png(&sa, with, &opts, &args.out)?;
    outln!("wrote {} ({}×{})", args.out.display(), r.width, r.height);
    Ok(ExitCode::SUCCESS)
}
