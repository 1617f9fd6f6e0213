//! `fetch` and `inspect --remote`: the Hub commands (see `crate::hub`).

use super::show_inspect;
use crate::adapter::catalog::Catalog;
use crate::adapter::layout::LayoutOptions;
use crate::hub::{self, FetchProgress, Hub, HubConfig, RepoRef};
use crate::view::text;
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// The repo: ORG/NAME[@REVISION] (or ORG/NAME/SUB for one adapter folder)
    pub repo: String,
    /// Branch, tag or commit (default: main)
    #[arg(long)]
    pub revision: Option<String>,
}

/// A single-threaded runtime: the work is waiting on the network.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
fn byte_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

pub(super) fn cmd_fetch(ctx: &Catalog, args: FetchArgs) -> Result<ExitCode> {
    let cache = ctx
        .cache
        .clone()
        .context("no hub cache folder: pass --cache DIR or set HF_HUB_CACHE / HF_HOME / HOME")?;
    let mut repo: RepoRef = args.repo.parse()?;
    if let Some(r) = &args.revision {
        repo = repo.at(r)?;
    }
    let bar = byte_bar();
    let progress = |p: &FetchProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.file.to_string());
    };
    let done = runtime()?
        .block_on(hub::fetch(HubConfig::from_env(), &cache, &repo, &progress))
        .with_context(|| format!("fetching {repo} into {}", cache.display()));
    bar.finish_and_clear();
    let done = done?;
    let cached = done.files.iter().filter(|f| f.cached).count();
    outln!(
        "{repo}: {} files at commit {} in {} ({} downloaded, {cached} already in the cache)",
        done.files.len(),
        done.commit,
        done.snapshot.display(),
        text::bytes(done.downloaded),
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cmd_inspect_remote(id: &str, json: bool, layout: LayoutOptions) -> Result<ExitCode> {
    let repo: RepoRef = id.parse()?;
    let adapters = runtime()?.block_on(async {
        let hub = Hub::new(HubConfig::from_env(), "inspect --remote")?;
        hub.remote_adapters(&repo, layout).await
    });
    let adapters = adapters.with_context(|| format!("reading the headers of {repo}"))?;
    let want = repo.adapter_id();
    let a = adapters
        .iter()
        .find(|a| a.id == want)
        .or_else(|| adapters.first())
        .context("the repo lists no file")?;
    if adapters.len() > 1 {
        let others: Vec<&str> = adapters
            .iter()
            .map(|a| a.id.as_str())
            .filter(|i| *i != a.id)
            .collect();
        errln!(
            "{repo} holds {} adapters; showing {} (others: {})",
            adapters.len(),
            a.id,
            others.join(", ")
        );
    }
    show_inspect(a, json)
}

/// How `scan --remote` and `report --remote` (without a LIST) find adapters on the Hub.
#[derive(Args, Debug, Default, Clone)]
pub struct DiscoverArgs {
    /// The base model whose adapters are listed (default: the base the local adapters name
    /// most, else openai/gpt-oss-20b)
    #[arg(long, value_name = "ORG/NAME")]
    pub base: Option<String>,
    /// Only repos whose id contains this text
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only repos of this user or organisation
    #[arg(long, value_name = "ORG")]
    pub author: Option<String>,
    /// At most this many repos
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Read every header from the Hub again, ignoring the header cache (which is then rewritten)
    #[arg(long)]
    pub refresh: bool,
}

impl DiscoverArgs {
    /// These flags mean nothing without `--remote`: say so rather than ignore them.
    pub(super) fn only_with_remote(&self, what: &str) -> Result<()> {
        if self.base.is_some()
            || self.search.is_some()
            || self.author.is_some()
            || self.limit.is_some()
            || self.refresh
        {
            anyhow::bail!("--base, --search, --author, --limit and --refresh go with {what}");
        }
        Ok(())
    }
}

/// The header cache in the user's cache folder (none without HOME or XDG_CACHE_HOME).
pub(super) fn header_cache(refresh: bool) -> Option<hub::HeaderCache> {
    hub::HeaderCache::default_dir().map(|d| hub::HeaderCache::new(d, refresh))
}

/// Runs the Hub discovery `args` describe (the base defaulting from `local`'s configs), with a
/// progress bar on stderr and the header cache of the user's cache folder.
pub(super) fn discover_remote(
    args: &DiscoverArgs,
    local: &[crate::adapter::Adapter],
) -> Result<(Vec<hub::HubAdapter>, hub::SurveyStats, String)> {
    let base = match &args.base {
        Some(b) => {
            let r: RepoRef = b.parse()?;
            if r.sub.is_some() || r.revision != "main" {
                anyhow::bail!("--base wants ORG/NAME, got '{b}'");
            }
            r.repo
        }
        None => hub::discover::default_base(local.iter().filter_map(|a| a.base_model())),
    };
    let q = hub::SearchQuery {
        base: Some(base.clone()),
        search: args.search.clone(),
        author: args.author.clone(),
        limit: args.limit,
    };
    let cfg = HubConfig::from_env();
    let what = format!("adapters of {base} on {}", cfg.endpoint);
    let cache = header_cache(args.refresh);
    let (rows, stats) = runtime()?
        .block_on(async {
            let hub = Hub::new(cfg, "scan --remote")?.with_header_cache(cache);
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let tick = |done: usize, of: usize| {
                bar.set_length(of as u64);
                bar.set_position(done as u64);
            };
            let out = hub.discover(&q, LayoutOptions::default(), &tick).await;
            bar.finish_and_clear();
            out
        })
        .with_context(|| format!("listing the {what}"))?;
    Ok((rows, stats, what))
}

/// A `scan --json` row of a Hub adapter: the local fields, then where it comes from.
#[derive(serde::Serialize)]
struct HubRow<'a> {
    #[serde(flatten)]
    summary: crate::adapter::Summary,
    source: &'static str,
    #[serde(flatten)]
    meta: &'a hub::HubMeta,
}

pub(super) fn cmd_scan_remote(
    ctx: &Catalog,
    paths: &[std::path::PathBuf],
    json: bool,
    args: &DiscoverArgs,
) -> Result<ExitCode> {
    // The local adapters only choose the default base (headers only, cheap).
    let local = if args.base.is_none() {
        crate::adapter::discovery::scan(&crate::adapter::discovery::ScanRequest {
            cache: ctx.cache.clone(),
            paths: paths.to_vec(),
            layout: LayoutOptions::default(),
        })
    } else {
        vec![]
    };
    let (rows, stats, what) = discover_remote(args, &local)?;
    if json {
        let out: Vec<HubRow> = rows
            .iter()
            .map(|r| HubRow {
                summary: r.adapter.summary(),
                source: "hub",
                meta: &r.meta,
            })
            .collect();
        super::print_json(&out)?;
    } else {
        if rows.is_empty() {
            errln!("no {what}");
        }
        let cells = |r: &hub::HubAdapter| {
            vec![
                r.meta.downloads.map_or("-".into(), |d| d.to_string()),
                r.meta.likes.map_or("-".into(), |d| d.to_string()),
            ]
        };
        out!(
            "{}",
            super::scan_table_with(
                rows.iter().map(|r| (&r.adapter, cells(r))),
                &["DOWNLOADS>", "LIKES>"]
            )
        );
        errln!(
            "{} repos, {} failed, {} received",
            stats.repos,
            stats.failed,
            text::bytes(stats.bytes_transferred)
        );
    }
    Ok(ExitCode::SUCCESS)
}
