//! `plot`: statistics (and a comparison) drawn to a PNG file.

use super::compute::StderrProgress;
use super::ReadOpts;
use crate::adapter::catalog::Catalog;
use crate::base::{self, stats as base_stats};
use crate::compute::compare;
use crate::compute::stats::{self, Control, Filter};
use crate::plot::{self, CompareWith, Metric, PlotKind, PlotOptions};
use crate::view::text;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// An id from `scan` or a path
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
    /// What the heatmap cells show
    #[arg(long, value_enum, default_value = "fro")]
    pub metric: Metric,
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

/// `--metric` takes the metric's names (`fro`, `spectral`, `erank`, `srank`); the library type
/// stays free of clap's derive.
impl clap::ValueEnum for Metric {
    fn value_variants<'a>() -> &'a [Self] {
        &Metric::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()).help(self.help()))
    }
}

pub fn cmd_plot(ctx: &Catalog, args: PlotArgs) -> Result<ExitCode> {
    let opts = PlotOptions {
        kind: args.kind,
        metric: args.metric,
        target: args.target.clone(),
        layer: args.layer,
        width: args.width,
        height: args.height,
        base: None,
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
    if args.metric.needs_base() {
        // The base named by the adapter's config (or --base), found in the cache.
        let named = args.base.as_deref().filter(|b| !b.is_empty());
        let session = base::session_for(&a, named, &ctx.roots())
            .map_err(|note| anyhow::anyhow!("--metric {}: {note}", args.metric.as_str()))?;
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
