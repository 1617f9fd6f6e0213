//! `check --format sarif`: the findings as a SARIF 2.1.0 log for code-scanning services. Plain
//! serde structs with only the fields written: serde-sarif (the one maintained SARIF crate)
//! generates its types from the schema at build time and brings a builder crate, for about
//! fifteen fields used here. tests/sarif.rs validates the output against the official schema.

use crate::health::serving::{self, Engine};
use crate::health::{code, place, Finding, Health, Severity};
use serde::Serialize;
use std::path::Path;

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// docs/health.md as published with the crate's sources; each rule's helpUri is an anchor in it.
pub const HELP_BASE: &str = "https://docs.rs/crate/lorascope/latest/source/docs/health.md";

/// The data findings' codes and what each means (docs/health.md, "Data findings").
const DATA: &[(&str, &str)] = &[
    (code::NON_FINITE, "A, B or a full tensor holds NaN or ±inf"),
    (code::DEAD, "A or B is exactly zero, so ΔW = 0"),
    (
        code::NEGLIGIBLE,
        "‖ΔW‖ is below 1e-3 × the adapter's median",
    ),
    (
        code::OUTLIER,
        "‖ΔW‖ is more than 6 robust SDs above its group's median",
    ),
    (
        code::IMBALANCE,
        "‖B‖/‖A‖ more than 2 decades from its target's median",
    ),
    (
        code::RANK_COLLAPSE,
        "the 99 %-energy rank of every delta is ≤ r/4",
    ),
    (
        code::COVERAGE,
        "experts or configured targets without LoRA, or LoRA the config does not list",
    ),
    (code::UNREADABLE, "the adapter's files cannot be read"),
    (code::EMPTY, "the safetensors hold no tensor"),
    (
        code::NOT_CHECKED,
        "no .safetensors file: nothing was checked",
    ),
    (code::NOT_LORA, "full weights, not a LoRA adapter"),
];

#[derive(Serialize)]
struct Log {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Run {
    tool: Tool,
    results: Vec<SarifResult>,
}

#[derive(Serialize)]
struct Tool {
    driver: Driver,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Driver {
    name: &'static str,
    version: &'static str,
    rules: Vec<Descriptor>,
}

#[derive(Serialize)]
struct Text {
    text: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    id: String,
    short_description: Text,
    help_uri: String,
    default_configuration: Configuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<RuleProperties>,
}

#[derive(Serialize)]
struct Configuration {
    level: &'static str,
}

#[derive(Serialize)]
struct RuleProperties {
    engine: &'static str,
    effect: &'static str,
    versions: &'static str,
    source: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    rule_id: String,
    rule_index: usize,
    level: &'static str,
    message: Text,
    locations: Vec<Location>,
    properties: ResultProperties,
}

#[derive(Serialize)]
struct ResultProperties {
    adapter: String,
    code: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: Physical,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logical_locations: Vec<Logical>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Physical {
    artifact_location: Artifact,
}

#[derive(Serialize)]
struct Artifact {
    uri: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Logical {
    name: String,
    fully_qualified_name: String,
    kind: &'static str,
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// A path as a URI reference: relative to the working directory when it lies below it (code
/// scanning wants repository-relative paths), each byte outside RFC 3986's unreserved set and
/// `/` percent-encoded.
fn uri(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|d| path.strip_prefix(d).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf());
    let mut s = String::new();
    for b in rel.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The rules a log lists: every data code, then every serving rule; a finding whose code is in
/// neither (a code added since) gets a descriptor of its own.
struct Rules(Vec<Descriptor>);

impl Rules {
    fn new() -> Rules {
        let mut v: Vec<Descriptor> = DATA.iter().map(|(id, what)| data_rule(id, what)).collect();
        v.extend(serving::all_rules().map(|r| Descriptor {
            id: r.id.to_string(),
            short_description: Text {
                text: format!("{}: {}", r.engine.label(), r.condition),
            },
            help_uri: format!("{HELP_BASE}#{}", r.anchor()),
            default_configuration: Configuration {
                level: level(r.severity),
            },
            properties: Some(RuleProperties {
                engine: r.engine.as_str(),
                effect: r.effect.as_str(),
                versions: r.versions,
                source: r.source,
            }),
        }));
        Rules(v)
    }

    fn index(&mut self, id: &str) -> usize {
        if let Some(i) = self.0.iter().position(|d| d.id == id) {
            return i;
        }
        self.0.push(data_rule(id, id));
        self.0.len() - 1
    }
}

fn data_rule(id: &str, what: &str) -> Descriptor {
    Descriptor {
        id: id.to_string(),
        short_description: Text {
            text: what.to_string(),
        },
        help_uri: format!("{HELP_BASE}#data-findings"),
        default_configuration: Configuration { level: "warning" },
        properties: None,
    }
}

fn result(rules: &mut Rules, h: &Health, file: &str, f: &Finding) -> SarifResult {
    let id = f.rule.unwrap_or(f.code);
    let logical = f
        .target
        .as_deref()
        .map(|t| Logical {
            name: t.to_string(),
            fully_qualified_name: place(f.layer, t, f.expert),
            kind: "module",
        })
        .into_iter()
        .collect();
    SarifResult {
        rule_index: rules.index(id),
        rule_id: id.to_string(),
        level: level(f.severity),
        message: Text {
            text: format!("{}: {}", h.id, f.message),
        },
        locations: vec![Location {
            physical_location: Physical {
                artifact_location: Artifact {
                    uri: file.to_string(),
                },
            },
            logical_locations: logical,
        }],
        properties: ResultProperties {
            adapter: h.id.clone(),
            code: f.code,
        },
    }
}

/// The SARIF log of checked adapters: `files[i]` is adapter i's file (its first safetensors, or
/// its folder). Only the engines in `engines` contribute serving results.
pub fn log(all: &[Health], files: &[&Path], engines: &[Engine]) -> impl Serialize {
    let mut rules = Rules::new();
    let mut results = vec![];
    for (h, file) in all.iter().zip(files) {
        let file = uri(file);
        let serving = engines.iter().flat_map(|e| &h.serving.of(*e).findings);
        for f in h.findings.iter().chain(serving) {
            results.push(result(&mut rules, h, &file, f));
        }
    }
    Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: "lorascope",
                    version: env!("CARGO_PKG_VERSION"),
                    rules: rules.0,
                },
            },
            results,
        }],
    }
}
