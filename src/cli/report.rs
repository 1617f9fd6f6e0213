//! `report`: the survey report of the cache, paths and remote repos (see `crate::report`).

use super::print_json;
use crate::adapter::catalog::Catalog;
use crate::adapter::discovery::{self, ScanRequest};
use crate::adapter::layout::LayoutOptions;
use crate::adapter::Kind;
use crate::hub::{self, Hub, HubConfig};
use crate::report;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Adapter folders, folders of adapters, .safetensors files or hub caches (added to the cache)
    pub paths: Vec<PathBuf>,
    /// Hub repos to survey over HTTP (headers only): a file with one ORG/NAME[@REV] per line, or
    /// ids separated by commas; without LIST, the adapters of a base model found on the Hub
    /// (--base etc.). Alone (no PATH, no --cache) it surveys only the remote repos.
    #[arg(long, value_name = "LIST", num_args = 0..=1)]
    pub remote: Option<Option<String>>,
    #[command(flatten)]
    pub discover: super::hub::DiscoverArgs,
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Add a health section: reads every factor of the local adapters (dead, non-finite) and
    /// judges every adapter's serving readiness (vLLM, SGLang)
    #[arg(long)]
    pub health: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Md,
    Json,
}

pub(super) fn cmd_report(ctx: &Catalog, args: ReportArgs) -> Result<ExitCode> {
    let remote_only = args.remote.is_some() && args.paths.is_empty() && !ctx.explicit_cache;
    let mut sources = Vec::new();
    let cache = if remote_only { None } else { ctx.cache.clone() };
    if let Some(c) = &cache {
        sources.push(format!("cache {}", c.display()));
    }
    sources.extend(args.paths.iter().map(|p| p.display().to_string()));
    let mut adapters = discovery::scan(&ScanRequest {
        cache,
        paths: args.paths.clone(),
        layout: LayoutOptions::default(),
    });
    let mut stats = None;
    if args.remote.is_none() {
        args.discover.only_with_remote("report --remote")?;
    }
    if let Some(None) = &args.remote {
        // Remote only: the cache is not reported, but its adapters still choose the default base.
        let local = if remote_only && args.discover.base.is_none() {
            discovery::scan(&ScanRequest {
                cache: ctx.cache.clone(),
                paths: vec![],
                layout: LayoutOptions::default(),
            })
        } else {
            vec![]
        };
        let (rows, s, what) = super::hub::discover_remote(
            &args.discover,
            if remote_only { &local } else { &adapters },
        )?;
        sources.push(what);
        adapters.extend(rows.into_iter().map(|r| r.adapter));
        stats = Some(s);
    } else if let Some(Some(list)) = &args.remote {
        if args.discover.base.is_some()
            || args.discover.search.is_some()
            || args.discover.author.is_some()
            || args.discover.limit.is_some()
        {
            anyhow::bail!("--base, --search, --author and --limit go with --remote without a LIST");
        }
        let (text, what) = match std::fs::read_to_string(list) {
            Ok(t) => (t, format!("reading the repo list {list}")),
            // Ids given inline: the parse error quotes the bad one, so name no list.
            Err(_) if !std::path::Path::new(list).exists() => {
                (list.clone(), "reading --remote".to_string())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {list}")),
        };
        let repos = hub::parse_list(&text).context(what)?;
        let cfg = HubConfig::from_env();
        sources.push(format!("{} repos from {}", repos.len(), cfg.endpoint));
        let rt = super::hub::runtime()?;
        let (remote, s) = rt.block_on(async {
            let hub = Hub::new(cfg, "report --remote")?
                .with_header_cache(super::hub::header_cache(args.discover.refresh));
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(repos.len() as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let tick = |done: usize| bar.set_position(done as u64);
            let out = hub.survey(&repos, LayoutOptions::default(), &tick).await;
            bar.finish_and_clear();
            anyhow::Ok(out)
        })?;
        adapters.extend(remote);
        stats = Some(s);
    }
    if adapters.is_empty() {
        errln!("no adapters found: the report is empty");
    }
    let mut r = report::build(&adapters, stats);
    r.sources = sources;
    if args.health {
        let ctl = crate::compute::stats::Control::default();
        let (health, read): (Vec<_>, Vec<_>) = adapters
            .iter()
            .map(|a| {
                // Remote adapters (and files gone since the scan) are judged from headers.
                let local = a.files.iter().all(|f| f.path.is_file());
                // Only tensors are data: an unreadable, empty or weightless adapter has none.
                let has_data = a.kind != Kind::Error && !(a.deltas.is_empty() && a.full.is_empty());
                match local.then(|| crate::health::check(a, &ctl)) {
                    Some(Ok(h)) => (h, has_data),
                    _ => (crate::health::analyze(a, &[], &[]), false),
                }
            })
            .unzip();
        r.health = Some(report::health_rows(&adapters, &health, &read));
    }
    match args.format {
        Format::Md => out!("{}", r.markdown()),
        Format::Json => print_json(&r)?,
    }
    Ok(ExitCode::SUCCESS)
}
