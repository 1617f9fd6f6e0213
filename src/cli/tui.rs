//! `lorascope tui` (and `lorascope` with no subcommand on a terminal): the explorer.

use crate::adapter::catalog::Catalog;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Default)]
pub struct TuiArgs {
    /// Adapter folders, folders of adapters, .safetensors files or hub caches (added to the cache)
    pub paths: Vec<PathBuf>,
    /// Folder the `p` key writes plots to (default: the working folder)
    #[arg(long, value_name = "DIR")]
    pub export_dir: Option<PathBuf>,
}

pub fn cmd_tui(ctx: &Catalog, args: TuiArgs) -> Result<ExitCode> {
    let ended = crate::tui::run(crate::tui::Config {
        cache: ctx.cache.clone(),
        explicit_cache: ctx.explicit_cache,
        paths: args.paths,
        export_dir: args.export_dir,
    })?;
    Ok(match ended {
        crate::tui::Ended::Quit => ExitCode::SUCCESS,
        // The shell's convention for "ended by signal N".
        crate::tui::Ended::Signal(n) => ExitCode::from((128 + n) as u8),
    })
}
