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
