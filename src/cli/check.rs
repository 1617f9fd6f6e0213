//! `check`: the health of adapters (findings, rank advice, vLLM/SGLang serving), for people and
//! for CI pipelines (exit 3 when a finding reaches `--fail-on`).

use super::compute::StderrProgress;
use super::print_json;
use crate::adapter::catalog::Catalog;
use crate::adapter::discovery::{self, ScanRequest};
use crate::adapter::layout::LayoutOptions;
use crate::compute::stats::Control;
use crate::health::serving::{self, Engine};
use crate::health::{self, EngineVerdict, Finding, Health, Severity};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::process::ExitCode;

/// The exit code when a finding reaches `--fail-on` (1 and 2 stay usage and I/O failures).
pub const EXIT_UNHEALTHY: u8 = 3;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Ids from `scan` or paths (default: every adapter in the cache)
    pub adapters: Vec<String>,
    /// The same as --format json
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output: text, json, or a SARIF 2.1.0 log for code-scanning services
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Judge serving for one engine only (default: both)
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// Exit with 3 when a finding is at least this severe
    #[arg(long, value_enum, default_value = "error")]
    pub fail_on: FailOn,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Vllm,
    Sglang,
}

impl EngineArg {
    fn engine(self) -> Engine {
        match self {
            EngineArg::Vllm => Engine::Vllm,
            EngineArg::Sglang => Engine::Sglang,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
    Never,
}

impl FailOn {
    fn level(self) -> Option<Severity> {
        match self {
            FailOn::Error => Some(Severity::Error),
            FailOn::Warning => Some(Severity::Warning),
            FailOn::Never => None,
        }
    }
}

pub fn cmd_check(ctx: &Catalog, args: CheckArgs) -> Result<ExitCode> {
    let adapters = if args.adapters.is_empty() {
        let all = discovery::scan(&ScanRequest {
            cache: ctx.cache.clone(),
            paths: vec![],
            layout: LayoutOptions::default(),
        });
        if all.is_empty() {
            errln!(
                "no adapters found in {}",
                ctx.cache
                    .as_deref()
                    .map_or("the hub cache".into(), |c| c.display().to_string())
            );
        }
        all
    } else {
        args.adapters
            .iter()
            .map(|id| ctx.find(id, LayoutOptions::default()))
            .collect::<crate::Result<Vec<_>>>()?
    };
    let progress = StderrProgress::new("checking");
    let cb = |d, t| progress.update(d, t);
    let ctl = Control {
        threads: args.threads,
        progress: Some(&cb),
        cancel: None,
    };
    let engines: Vec<Engine> = match args.engine {
        Some(e) => vec![e.engine()],
        None => Engine::ALL.to_vec(),
    };
    let mut out = Vec::with_capacity(adapters.len());
    for a in &adapters {
        let mut h = health::check(a, &ctl).with_context(|| format!("checking {}", a.id))?;
        if let Some(e) = args.engine {
            serving::limit(&mut h, e.engine());
        }
        out.push(h);
    }
    progress.finish();
    let format = if args.json {
        OutputFormat::Json
    } else {
        args.format
    };
    match format {
        OutputFormat::Json => print_json(&json(&out, &engines)?)?,
        OutputFormat::Sarif => {
            let files: Vec<&std::path::Path> = adapters
                .iter()
                .map(|a| {
                    a.files
                        .first()
                        .map_or(a.path.as_path(), |f| f.path.as_path())
                })
                .collect();
            print_json(&super::sarif::log(&out, &files, &engines))?
        }
        OutputFormat::Text => out!("{}", text(&out, &engines)),
    }
    let failed = args
        .fail_on
        .level()
        .is_some_and(|l| out.iter().any(|h| h.reaches(l)));
    Ok(if failed {
        ExitCode::from(EXIT_UNHEALTHY)
    } else {
        ExitCode::SUCCESS
    })
}

fn finding_line(f: &Finding) -> String {
    match f.rule {
        Some(rule) => format!("    {:<16} {rule}: {}\n", f.code, f.message),
        None => format!("    {:<16} {}\n", f.code, f.message),
    }
}

fn engine(name: &str, e: &EngineVerdict) -> String {
    let mut s = format!("  {name}: {}\n", e.label().1);
    for f in &e.findings {
        s.push_str(&format!(
            "    {:<8}{}",
            f.severity.as_str(),
            finding_line(f).trim_start()
        ));
    }
    s
}

/// `check --json`: the health of each adapter, with only the judged engines under `serving`.
fn json(all: &[Health], engines: &[Engine]) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(all)?;
    for h in v.as_array_mut().into_iter().flatten() {
        if let Some(s) = h.get_mut("serving").and_then(|s| s.as_object_mut()) {
            s.retain(|k, _| engines.iter().any(|e| e.as_str() == k));
        }
    }
    Ok(v)
}

/// The readable list: per adapter its verdict, findings by severity, serving, rank advice.
pub fn text(all: &[Health], engines: &[Engine]) -> String {
    let mut s = String::new();
    for h in all {
        s.push_str(&format!(
            "{}  {} {}\n",
            h.id,
            h.verdict.mark(),
            h.verdict.as_str()
        ));
        for (sev, title) in [
            (Severity::Error, "errors"),
            (Severity::Warning, "warnings"),
            (Severity::Info, "info"),
        ] {
            let of: Vec<&Finding> = h.findings.iter().filter(|f| f.severity == sev).collect();
            if of.is_empty() {
                continue;
            }
            s.push_str(&format!("  {title}\n"));
            for f in of {
                s.push_str(&finding_line(f));
            }
        }
        for e in engines {
            s.push_str(&engine(e.label(), h.serving.of(*e)));
        }
        if !h.rank_advice.is_empty() {
            let parts: Vec<String> = h
                .rank_advice
                .iter()
                .map(|r| {
                    format!(
                        "{} r {} (99 %: {}, 90 %: {})",
                        r.target, r.rank, r.rank_99, r.rank_90
                    )
                })
                .collect();
            s.push_str(&format!("  rank  {}\n", parts.join("; ")));
        }
        s.push('\n');
    }
    let count = |v: health::Verdict| all.iter().filter(|h| h.verdict == v).count();
    s.push_str(&format!(
        "{} adapter{}: {} ok, {} warning, {} error\n",
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        count(health::Verdict::Ok),
        count(health::Verdict::Warning),
        count(health::Verdict::Error)
    ));
    s
}
