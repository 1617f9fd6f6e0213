//! `export`: an adapter rewritten as a PEFT adapter an engine serves (docs/export.md).

use super::compute::StderrProgress;
use super::table::Table;
use super::{print_json, ReadOpts};
use crate::adapter::catalog::Catalog;
use crate::compute::stats::Control;
use crate::export::{self, Engine, Format, Options, RankRule, Report};
use crate::view::text;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An id from `scan` or a path
    pub adapter: String,
    /// The folder to write (created; a non-empty one only with --force); with --format gguf,
    /// the .gguf file (an existing one only with --force)
    #[arg(long, value_name = "DIR|FILE.gguf")]
    pub out: PathBuf,
    /// What to write: a PEFT adapter folder, or a GGUF LoRA file for llama.cpp
    #[arg(long, value_enum, default_value = "peft")]
    pub format: FormatArg,
    /// What the output must load in: PEFT, or an engine whose rules it must pass (default:
    /// peft; llamacpp with --format gguf)
    #[arg(long = "for", value_enum)]
    pub engine: Option<EngineArg>,
    /// Truncate every delta to its best rank-K approximation
    #[arg(long, value_name = "K", conflicts_with = "energy")]
    pub rank: Option<usize>,
    /// Per delta, the smallest rank keeping this fraction of Σσ² (0 < F ≤ 1)
    #[arg(long, value_name = "F")]
    pub energy: Option<f64>,
    /// Cap the rank --rank or --energy gives (or the source's)
    #[arg(long, value_name = "K")]
    pub max_rank: Option<usize>,
    /// Leave out what the output cannot carry (router or embedding LoRA, full tensors, …) and
    /// say so, instead of stopping
    #[arg(long)]
    pub drop_unservable: bool,
    /// The data type written (default: the source's); q8_0 only with --format gguf
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Replace a non-empty --out
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadOpts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Peft,
    Vllm,
    Sglang,
    Llamacpp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Peft,
    Gguf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

pub fn cmd_export(ctx: &Catalog, args: ExportArgs) -> Result<ExitCode> {
    let rank = match (args.rank, args.energy) {
        (Some(0), _) => bail!("--rank must be at least 1"),
        (Some(k), _) => RankRule::Rank(k),
        (None, Some(f)) if !(f > 0.0 && f <= 1.0) => bail!("--energy must be in (0, 1], not {f}"),
        (None, Some(f)) => RankRule::Energy(f),
        (None, None) => RankRule::Keep,
    };
    if args.max_rank == Some(0) {
        bail!("--max-rank must be at least 1");
    }
    let gguf = args.format == FormatArg::Gguf;
    let q8_0 = args.dtype == Some(DtypeArg::Q8_0);
    if q8_0 && !gguf {
        bail!("--dtype q8_0 is a GGUF type: pass --format gguf");
    }
    let a = ctx.find_usable(&args.adapter, args.read.layout())?;
    let opts = Options {
        format: if gguf {
            Format::Gguf { q8_0 }
        } else {
            Format::Peft
        },
        engine: match args.engine {
            None if gguf => Engine::Llamacpp,
            None | Some(EngineArg::Peft) => Engine::Peft,
            Some(EngineArg::Vllm) => Engine::Vllm,
            Some(EngineArg::Sglang) => Engine::Sglang,
            Some(EngineArg::Llamacpp) => Engine::Llamacpp,
        },
        rank,
        max_rank: args.max_rank,
        dtype: args.dtype.and_then(|d| match d {
            DtypeArg::F32 => Some(Dtype::F32),
            DtypeArg::Bf16 => Some(Dtype::BF16),
            DtypeArg::F16 => Some(Dtype::F16),
            DtypeArg::Q8_0 => None,
        }),
        drop_unservable: args.drop_unservable,
        force: args.force,
        protected: export::protected_roots(ctx.cache.as_deref()),
    };
    let progress = StderrProgress::new("exporting");
    let show = |d, t| progress.update(d, t);
    let ctl = Control {
        progress: Some(&show),
        ..Control::default()
    };
    let report = export::export(&a, &args.out, &opts, &ctl);
    progress.finish();
    let report = report?;
    if args.json {
        print_json(&report)?;
    } else {
        out!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The report for people: one row per target, then what was left out and how it was checked.
fn human(r: &Report) -> String {
    let mut s = if r.format == "gguf" {
        format!(
            "wrote {} (GGUF for llama.cpp, {}, adapter.lora.alpha {} = the largest rank) from {}\n\n",
            r.out.display(),
            r.dtype,
            r.r,
            r.source
        )
    } else {
        format!(
            "wrote {} (PEFT, {}, rank {}) from {}\n\n",
            r.out.display(),
            r.dtype,
            r.r,
            r.source
        )
    };
    let mut by_target: BTreeMap<_, Vec<&export::DeltaReport>> = BTreeMap::new();
    for d in &r.deltas {
        by_target.entry(d.target.clone()).or_default().push(d);
    }
    let mut t = Table::new(&[
        "TARGET",
        "DELTAS>",
        "RANK>",
        "NEW RANK>",
        "MIN ENERGY>",
        "MAX REL ERR>",
    ]);
    for (target, ds) in &by_target {
        let span = |f: fn(&&export::DeltaReport) -> usize| {
            let (lo, hi) = (
                ds.iter().map(f).min().unwrap_or(0),
                ds.iter().map(f).max().unwrap_or(0),
            );
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            }
        };
        t.row(vec![
            target.to_string(),
            ds.len().to_string(),
            span(|d| d.rank_before),
            span(|d| d.rank_after),
            format!(
                "{:.2} %",
                100.0 * ds.iter().map(|d| d.energy_kept).fold(1.0, f64::min)
            ),
            format!(
                "{:.3e}",
                ds.iter().map(|d| d.relative_error).fold(0.0, f64::max)
            ),
        ]);
    }
    s += &t.render();
    if !r.dropped.is_empty() {
        s += "\nleft out (--drop-unservable):\n";
        for d in &r.dropped {
            s += &format!("  {}: {}\n", d.name, d.reason);
        }
    }
    for n in &r.notes {
        s += &format!("\nnote: {n}\n");
    }
    s += &format!(
        "\nsize: {} → {}\nverified: {} deltas re-read from the written file, singular values \
         within {:.1e} of the expected (tolerance {:.1e})\n",
        text::bytes(r.bytes_before),
        text::bytes(r.bytes_after),
        r.verified.deltas,
        r.verified.max_difference,
        r.verified.tolerance
    );
    if let Some(v) = r.max_lora_rank {
        s += &format!("vLLM: serve with --max-lora-rank {v}\n");
    }
    s
}
