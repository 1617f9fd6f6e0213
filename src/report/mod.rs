//! The survey report: how many adapters follow each pattern, with which ranks, dtypes, tensor
//! counts and expert layers, and what is unusual. `build` is a pure function of the adapters (local
//! or remote); `Report` renders as Markdown and serialises as JSON with the same numbers.

use crate::adapter::layout::{ExpertLayout, Target};
use crate::adapter::{Adapter, Kind, Pattern};
use crate::health::{code as health_code, Health, Severity, Verdict};
use crate::hub::SurveyStats;
use serde::Serialize;
use std::collections::BTreeMap;

/// The pattern rows, in the survey's order. `other-lora` is added only when it occurs.
pub const ROWS: [&str; 9] = [
    "attention-only",
    "attention+router",
    "attention+experts per-expert",
    "attention+experts shared-3d",
    "full-weights",
    MULTI,
    "empty",
    "no-safetensors",
    "error",
];

pub const MULTI: &str = "multi-adapter repos";

const EXAMPLES: usize = 3;
/// Items listed in one note before "… and N more".
const NOTE_ITEMS: usize = 8;

/// A value and how many adapters have it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Count<T> {
    pub value: T,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub repos: usize,
    pub adapters: usize,
    pub lora: usize,
    /// Full weights that no adapter of the list names as its base (merged models and the like).
    pub full_weights: usize,
    /// Full models that adapters of the list name as their base (pattern `base model`).
    pub base_models_present: usize,
    pub empty: usize,
    pub no_safetensors: usize,
    pub errors: usize,
    pub multi_adapter_repos: usize,
    pub files: usize,
    pub tensors: usize,
    pub bytes: u64,
    /// `null` value: no base model named.
    pub base_models: Vec<Count<Option<String>>>,
    /// The writers' conventions of the LoRA adapters (`peft`, `unsloth`, `mlx`, …).
    pub formats: Vec<Count<String>>,
}

/// One row of the pattern table with its details.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternRow {
    pub pattern: String,
    /// Each repo counts once: in `multi-adapter repos` when it saves several adapters, else in
    /// its adapter's pattern.
    pub repos: usize,
    /// Each adapter by its own pattern; for `multi-adapter repos`, the adapters they hold.
    pub adapters: usize,
    pub targets: Vec<Count<String>>,
    pub attention_ranks: Vec<Count<usize>>,
    /// Per expert (r, not r·E).
    pub expert_ranks: Vec<Count<usize>>,
    pub dtypes: Vec<Count<String>>,
    pub tensors: Vec<Count<usize>>,
    pub examples: Vec<String>,
}

/// A repo and the row it counts in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoRow {
    pub repo: String,
    pub pattern: String,
    pub adapters: usize,
}

/// Adapters with one combination of attention and expert rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankRow {
    pub attention_rank: Option<usize>,
    /// Per expert.
    pub expert_rank: Option<usize>,
    pub expert_layout: Option<ExpertLayout>,
    /// PEFT packs E rank-r LoRAs into one pair of r·E: the number the survey called the rank.
    pub packed_rank: Option<usize>,
    pub adapters: usize,
    pub examples: Vec<String>,
}

/// Adapters carrying expert LoRA on one set of layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSet {
    pub layers: Vec<usize>,
    pub expert_layout: Option<ExpertLayout>,
    pub adapters: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertLayers {
    pub sets: Vec<LayerSet>,
    /// Layer → number of adapters with expert LoRA there.
    pub per_layer: Vec<Count<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Where the adapters came from (set by the caller: cache, paths, remote list).
    pub sources: Vec<String>,
    pub overview: Overview,
    pub patterns: Vec<PatternRow>,
    /// Every repo with its row (JSON only).
    pub repos: Vec<RepoRow>,
    pub rank_distribution: Vec<RankRow>,
    pub expert_layers: ExpertLayers,
    pub notes: Vec<String>,
    pub remote: Option<SurveyStats>,
    /// `report --health`: per pattern, how many adapters are dead, non-finite, not servable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<HealthRow>>,
}

/// One pattern's health counts (`report --health`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthRow {
    pub pattern: String,
    pub adapters: usize,
    /// Adapters whose data was read (local files); the others were judged from headers only.
    pub data_checked: usize,
    /// With a `dead` finding of severity error (a whole target or expert group is zero).
    pub dead: usize,
    pub non_finite: usize,
    /// With an error in the vLLM / SGLang serving rules (refused, or part not applied).
    pub not_servable_vllm: usize,
    pub not_servable_sglang: usize,
    /// Overall verdicts.
    pub ok: usize,
    pub warning: usize,
    pub error: usize,
}

/// The health table of `report --health` from each adapter's health; `data_read[i]` says whether
/// adapter i's factors were read (else its health comes from headers and config only).
pub fn health_rows(adapters: &[Adapter], health: &[Health], data_read: &[bool]) -> Vec<HealthRow> {
    let mut rows: BTreeMap<Pattern, HealthRow> = BTreeMap::new();
    for ((a, h), &read) in adapters.iter().zip(health).zip(data_read) {
        let p = a.pattern();
        let r = rows.entry(p).or_insert_with(|| HealthRow {
            pattern: p.as_str().to_string(),
            adapters: 0,
            data_checked: 0,
            dead: 0,
            non_finite: 0,
            not_servable_vllm: 0,
            not_servable_sglang: 0,
            ok: 0,
            warning: 0,
            error: 0,
        });
        let has = |code: &str| {
            h.findings
                .iter()
                .any(|f| f.code == code && f.severity == Severity::Error)
        };
        r.adapters += 1;
        r.data_checked += usize::from(read);
        r.dead += usize::from(has(health_code::DEAD));
        r.non_finite += usize::from(has(health_code::NON_FINITE));
        r.not_servable_vllm += usize::from(h.serving.vllm.verdict == Verdict::Error);
        r.not_servable_sglang += usize::from(h.serving.sglang.verdict == Verdict::Error);
        match h.verdict {
            Verdict::Ok => r.ok += 1,
            Verdict::Warning => r.warning += 1,
            Verdict::Error => r.error += 1,
        }
    }
    rows.into_values().collect()
}

/// The repo an adapter belongs to: `ORG/NAME` for hub adapters (cache or remote), else the
/// outermost adapter folder named whose id prefixes it.
fn repo_keys(adapters: &[Adapter]) -> Vec<String> {
    adapters
        .iter()
        .map(|a| {
            if a.revision.is_some() {
                return a.id.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
            }
            adapters
                .iter()
                .filter(|b| b.revision.is_none())
                .map(|b| b.id.as_str())
                .filter(|b| a.id.starts_with(&format!("{b}/")))
                .min_by_key(|b| b.len())
                .unwrap_or(&a.id)
                .to_string()
        })
        .collect()
}

fn counts<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Vec<Count<T>> {
    let mut m: BTreeMap<T, usize> = BTreeMap::new();
    for v in values {
        *m.entry(v).or_default() += 1;
    }
    m.into_iter()
        .map(|(value, count)| Count { value, count })
        .collect()
}

/// Most frequent first (ties in value order).
fn by_frequency<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Vec<Count<T>> {
    let mut c = counts(values);
    c.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
    c
}

fn examples<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    ids.take(EXAMPLES).map(str::to_owned).collect()
}

/// Computes the report of `adapters` (in the order given) and of a remote survey's totals.
pub fn build(adapters: &[Adapter], remote: Option<SurveyStats>) -> Report {
    let keys = repo_keys(adapters);
    let mut repos: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match repos.iter_mut().find(|(r, _)| r == k) {
            Some((_, v)) => v.push(i),
            None => repos.push((k, vec![i])),
        }
    }
    let patterns: Vec<Pattern> = adapters.iter().map(Adapter::pattern).collect();
    let multi: Vec<&(&str, Vec<usize>)> = repos.iter().filter(|(_, v)| v.len() > 1).collect();
    let row_of_repo = |v: &Vec<usize>| {
        if v.len() > 1 {
            MULTI
        } else {
            patterns[v[0]].as_str()
        }
    };
    let mut rows: Vec<&str> = ROWS.to_vec();
    // Rows of patterns the survey did not have appear only when they occur.
    let mut at = 4;
    for p in [Pattern::ExpertsModuleList, Pattern::OtherLora] {
        if patterns.contains(&p) {
            rows.insert(at, p.as_str());
            at += 1;
        }
    }
    // Base models the adapters name, after the merged/full-weights row.
    if patterns.contains(&Pattern::BaseModel) {
        rows.insert(at + 1, Pattern::BaseModel.as_str());
    }
    let pattern_rows = rows
        .iter()
        .map(|&row| {
            let members: Vec<&Adapter> = if row == MULTI {
                multi
                    .iter()
                    .flat_map(|(_, v)| v.iter().map(|&i| &adapters[i]))
                    .collect()
            } else {
                adapters
                    .iter()
                    .filter(|a| a.pattern().as_str() == row)
                    .collect()
            };
            let ex: Vec<String> = if row == MULTI {
                examples(multi.iter().map(|(r, _)| *r))
            } else {
                examples(members.iter().map(|a| a.id.as_str()))
            };
            PatternRow {
                pattern: row.to_string(),
                repos: repos.iter().filter(|(_, v)| row_of_repo(v) == row).count(),
                adapters: members.len(),
                targets: by_frequency(
                    members
                        .iter()
                        .filter(|a| !a.deltas.is_empty() || !a.full.is_empty())
                        .map(|a| crate::view::text::compact_targets(&a.targets())),
                ),
                attention_ranks: counts(members.iter().filter_map(|a| a.attention_rank())),
                expert_ranks: counts(members.iter().filter_map(|a| a.expert_rank())),
                dtypes: by_frequency(members.iter().flat_map(|a| a.dtypes())),
                tensors: counts(
                    members
                        .iter()
                        .filter(|a| !a.files.is_empty())
                        .map(|a| a.tensors.len()),
                ),
                examples: ex,
            }
        })
        .collect();

    let lora: Vec<&Adapter> = adapters.iter().filter(|a| a.kind == Kind::Lora).collect();
    // Keyed by (expert r, attention r, packed r·E): attention-only ranks first.
    type RankKey = (Option<usize>, Option<usize>, Option<usize>);
    let mut ranks: BTreeMap<RankKey, Vec<&str>> = BTreeMap::new();
    for a in &lora {
        let packed = match a.expert_layout() {
            Some(ExpertLayout::PerExpert) => a.expert_rank().zip(a.experts()).map(|(r, e)| r * e),
            _ => None,
        };
        ranks
            .entry((a.expert_rank(), a.attention_rank(), packed))
            .or_default()
            .push(&a.id);
    }
    let rank_distribution = ranks
        .into_iter()
        .map(|((expert, attention, packed), ids)| RankRow {
            attention_rank: attention,
            expert_rank: expert,
            expert_layout: lora
                .iter()
                .find(|a| a.id == ids[0])
                .and_then(|a| a.expert_layout()),
            packed_rank: packed,
            adapters: ids.len(),
            examples: examples(ids.into_iter()),
        })
        .collect();

    let with_experts: Vec<&Adapter> = lora
        .iter()
        .copied()
        .filter(|a| a.expert_layout().is_some())
        .collect();
    let mut sets: BTreeMap<(Vec<usize>, Option<&str>), Vec<&str>> = BTreeMap::new();
    for a in &with_experts {
        sets.entry((a.expert_layers(), a.expert_layout().map(|l| l.as_str())))
            .or_default()
            .push(&a.id);
    }
    let mut sets: Vec<LayerSet> = sets
        .into_iter()
        .map(|((layers, _), ids)| LayerSet {
            expert_layout: with_experts
                .iter()
                .find(|a| a.id == ids[0])
                .and_then(|a| a.expert_layout()),
            layers,
            adapters: ids.len(),
            examples: examples(ids.into_iter()),
        })
        .collect();
    sets.sort_by(|a, b| b.adapters.cmp(&a.adapters).then(a.layers.cmp(&b.layers)));
    let expert_layers = ExpertLayers {
        sets,
        per_layer: counts(with_experts.iter().flat_map(|a| a.expert_layers())),
    };

    let kind_count = |k: Kind| adapters.iter().filter(|a| a.kind == k).count();
    let overview = Overview {
        repos: repos.len(),
        adapters: adapters.len(),
        lora: lora.len(),
        full_weights: adapters
            .iter()
            .filter(|a| a.pattern() == Pattern::FullWeights)
            .count(),
        base_models_present: adapters
            .iter()
            .filter(|a| a.pattern() == Pattern::BaseModel)
            .count(),
        empty: kind_count(Kind::Empty),
        no_safetensors: kind_count(Kind::NoSafetensors),
        errors: kind_count(Kind::Error),
        multi_adapter_repos: multi.len(),
        files: adapters.iter().map(|a| a.files.len()).sum(),
        tensors: adapters.iter().map(|a| a.tensors.len()).sum(),
        bytes: adapters.iter().map(Adapter::bytes).sum(),
        formats: by_frequency(
            adapters
                .iter()
                .filter_map(|a| a.format().map(|f| f.as_str().to_string())),
        ),
        base_models: by_frequency(
            adapters
                .iter()
                .filter(|a| matches!(a.kind, Kind::Lora | Kind::Empty))
                .map(Adapter::base_model),
        ),
    };
    let notes = notes(adapters, &overview, remote.as_ref());
    let repo_rows = repos
        .iter()
        .map(|(r, v)| RepoRow {
            repo: r.to_string(),
            pattern: row_of_repo(v).to_string(),
            adapters: v.len(),
        })
        .collect();
    Report {
        sources: vec![],
        overview,
        patterns: pattern_rows,
        repos: repo_rows,
        rank_distribution,
        expert_layers,
        notes,
        remote,
        health: None,
    }
}

/// `a, b, c and 4 more`.
fn list(items: &[String]) -> String {
    let shown = items
        .iter()
        .take(NOTE_ITEMS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match items.len().saturating_sub(NOTE_ITEMS) {
        0 => shown,
        n => format!("{shown} and {n} more"),
    }
}

/// Anything a reader of the tables should know.
fn notes(adapters: &[Adapter], ov: &Overview, remote: Option<&SurveyStats>) -> Vec<String> {
    let mut out = Vec::new();
    let ids = |f: &dyn Fn(&Adapter) -> bool| -> Vec<String> {
        adapters
            .iter()
            .filter(|a| f(a))
            .map(|a| a.id.clone())
            .collect()
    };
    let per_expert: Vec<&Adapter> = adapters
        .iter()
        .filter(|a| a.expert_layout() == Some(ExpertLayout::PerExpert))
        .collect();
    if let Some(a) = per_expert.iter().find(|a| a.experts().is_some()) {
        let (r, e) = (a.expert_rank().unwrap_or(0), a.experts().unwrap_or(0));
        out.push(format!(
            "{} adapter(s) use PEFT target_parameters (pattern C): each packs E separate rank-r \
             LoRAs into one lora_A of r·E rows, so their expert rank is given per expert \
             (e.g. {} has r = {r} for each of {e} experts, stored as {}); it is not one LoRA \
             shared by all experts.",
            per_expert.len(),
            a.id,
            r * e
        ));
    }
    let partial = ids(&|a| {
        let el = a.expert_layers();
        !el.is_empty() && el.len() < a.layer_indices().len()
    });
    if !partial.is_empty() {
        let detail: Vec<String> = adapters
            .iter()
            .filter(|a| partial.contains(&a.id))
            .map(|a| {
                format!(
                    "{} (layers {})",
                    a.id,
                    crate::view::text::layers(&a.expert_layers())
                )
            })
            .collect();
        out.push(format!(
            "{} adapter(s) carry expert LoRA on only some of their layers: {}.",
            partial.len(),
            list(&detail)
        ));
    }
    let shared3d = ids(&|a| a.expert_layout() == Some(ExpertLayout::Shared3d));
    if !shared3d.is_empty() {
        out.push(format!(
            "{} adapter(s) store experts as 3D tensors with a broadcast dimension of 1 \
             (Tinker w1/w2/w3: one of lora_A or lora_B shared by all experts): {}.",
            shared3d.len(),
            list(&shared3d)
        ));
    }
    let router =
        ids(&|a| a.full.iter().any(|f| f.target == Target::Router) && a.kind == Kind::Lora);
    if !router.is_empty() {
        out.push(format!(
            "{} adapter(s) save the full router (modules_to_save), which replaces the base \
             router rather than adding a delta: {}.",
            router.len(),
            list(&router)
        ));
    }
    let mixed = ids(&|a| a.dtypes().len() > 1);
    if !mixed.is_empty() {
        out.push(format!(
            "{} adapter(s) mix dtypes: {}.",
            mixed.len(),
            list(&mixed)
        ));
    }
    let full = ids(&|a| a.pattern() == Pattern::FullWeights);
    if !full.is_empty() {
        out.push(format!(
            "{} hold(s) plain weights, not LoRA (a merged model or part of one): {}.",
            full.len(),
            list(&full)
        ));
    }
    let empty = ids(&|a| a.kind == Kind::Empty);
    if !empty.is_empty() {
        out.push(format!(
            "{} hold(s) safetensors with no tensor: {}.",
            empty.len(),
            list(&empty)
        ));
    }
    let no_st: Vec<String> = adapters
        .iter()
        .filter(|a| a.kind == Kind::NoSafetensors)
        .map(|a| match a.other_files.first() {
            Some(f) => format!("{} ({f})", a.id),
            None => a.id.clone(),
        })
        .collect();
    if !no_st.is_empty() {
        out.push(format!(
            "{} have no .safetensors file (checkpoints in other formats or incomplete \
             uploads): {}.",
            no_st.len(),
            list(&no_st)
        ));
    }
    let no_config = ids(&|a| a.kind == Kind::Lora && a.config.config().is_none());
    if !no_config.is_empty() {
        out.push(format!(
            "{} LoRA adapter(s) have no usable adapter_config.json (ranks from shapes, scale \
             unknown): {}.",
            no_config.len(),
            list(&no_config)
        ));
    }
    if let Some(top) = ov.base_models.first().and_then(|c| c.value.clone()) {
        let other = ids(&|a| {
            matches!(a.kind, Kind::Lora | Kind::Empty) && a.base_model().is_some_and(|b| b != top)
        });
        if !other.is_empty() {
            out.push(format!(
                "{} adapter(s) name a base model other than {top}: {}.",
                other.len(),
                list(&other)
            ));
        }
    }
    let unknown: Vec<String> = adapters
        .iter()
        .filter(|a| a.unrecognised() > 0)
        .map(|a| format!("{} ({})", a.id, a.unrecognised()))
        .collect();
    if !unknown.is_empty() {
        out.push(format!(
            "{} adapter(s) hold tensors lorascope does not understand (role `unknown`, never \
             counted in a delta; see `inspect`): {}.",
            unknown.len(),
            list(&unknown)
        ));
    }
    let other = ids(&|a| a.pattern() == Pattern::OtherLora);
    if !other.is_empty() {
        out.push(format!(
            "{} LoRA adapter(s) touch neither attention nor experts: {}.",
            other.len(),
            list(&other)
        ));
    }
    let errors: Vec<String> = adapters
        .iter()
        .filter_map(|a| a.error.as_ref().map(|e| format!("{}: {e}", a.id)))
        .collect();
    if !errors.is_empty() {
        out.push(format!(
            "{} could not be read: {}.",
            errors.len(),
            list(&errors)
        ));
    }
    if let Some(r) = remote.filter(|r| r.failed > 0) {
        out.push(format!(
            "{} of {} remote repos failed (listed as errors above); the others were surveyed.",
            r.failed, r.repos
        ));
    }
    out
}

/// `8 (22), 16 (3)`; empty when there is nothing.
fn fmt_counts<T>(c: &[Count<T>], show: impl Fn(&T) -> String) -> String {
    c.iter()
        .map(|x| format!("{} ({})", show(&x.value), x.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn opt(v: Option<usize>) -> String {
    v.map_or("–".into(), |x| x.to_string())
}

/// Markdown table cells must not contain `|`, nor a line break (ids come from servers too).
fn cell(s: &str) -> String {
    crate::view::text::escape_line(s).replace('|', "\\|")
}

impl Report {
    pub fn markdown(&self) -> String {
        use crate::view::text::{bytes, layers};
        let ov = &self.overview;
        let mut md = String::from("# LoRA adapter survey\n\n## Overview\n\n");
        if !self.sources.is_empty() {
            md += &format!("- **Sources**: {}\n", self.sources.join("; "));
        }
        md += &format!(
            "- **Repos**: {}, holding {} ({} saving several adapters)\n",
            ov.repos,
            plural(ov.adapters, "adapter"),
            ov.multi_adapter_repos
        );
        md += &format!(
            "- **LoRA adapters**: {}; full weights: {}; empty: {}; without safetensors: {}; \
             errors: {}\n",
            ov.lora, ov.full_weights, ov.empty, ov.no_safetensors, ov.errors
        );
        if ov.base_models_present > 0 {
            md += &format!(
                "- **Base models in the list**: {} (full models the adapters name; not counted as full weights)\n",
                ov.base_models_present
            );
        }
        md += &format!(
            "- **Safetensors**: {} files, {}, {} tensors (headers only were read)\n",
            ov.files,
            bytes(ov.bytes),
            ov.tensors
        );
        if !ov.base_models.is_empty() {
            md += &format!(
                "- **Base models**: {}\n",
                fmt_counts(&ov.base_models, |b| b
                    .clone()
                    .unwrap_or_else(|| "none named".into()))
            );
        }
        if !ov.formats.is_empty() {
            md += &format!(
                "- **Formats**: {}\n",
                fmt_counts(&ov.formats, |f| f.clone())
            );
        }
        if let Some(r) = &self.remote {
            let pct = if r.bytes_total > 0 {
                100.0 * r.bytes_transferred as f64 / r.bytes_total as f64
            } else {
                0.0
            };
            md += &format!(
                "- **Remote**: {} repos read over HTTP, {} transferred for {} of safetensors \
                 ({pct:.3} %); {} failed\n",
                r.repos,
                bytes(r.bytes_transferred),
                bytes(r.bytes_total),
                r.failed
            );
        }

        md += "\n## Patterns\n\n| Pattern | Repos | Adapters |\n|---|---:|---:|\n";
        for p in &self.patterns {
            md += &format!("| {} | {} | {} |\n", p.pattern, p.repos, p.adapters);
        }
        md += &format!("| **total** | {} | {} |\n\n", ov.repos, ov.adapters);
        md += "Repos: each repo once, in its adapter's pattern, or under *multi-adapter repos* \
               when it saves several adapters. Adapters: each adapter by its own pattern (the \
               adapters of multi-adapter repos also count in their pattern's row).\n";
        for p in self.patterns.iter().filter(|p| p.adapters > 0) {
            md += &format!(
                "\n### {} ({}, {})\n\n",
                p.pattern,
                plural(p.repos, "repo"),
                plural(p.adapters, "adapter")
            );
            let lines = [
                ("Targets", fmt_counts(&p.targets, |t| t.clone())),
                (
                    "Attention rank",
                    fmt_counts(&p.attention_ranks, usize::to_string),
                ),
                (
                    "Expert rank (per expert)",
                    fmt_counts(&p.expert_ranks, usize::to_string),
                ),
                ("Dtypes", fmt_counts(&p.dtypes, |d| d.clone())),
                ("Tensors", fmt_counts(&p.tensors, usize::to_string)),
                ("Examples", p.examples.join(", ")),
            ];
            for (what, v) in lines.iter().filter(|(_, v)| !v.is_empty()) {
                md += &format!("- {what}: {}\n", crate::view::text::escape_line(v));
            }
        }

        md += "\n## Rank distribution (LoRA adapters)\n\n\
               | Attention r | Expert r (per expert) | Adapters | Note |\n|---:|---:|---:|---|\n";
        for r in &self.rank_distribution {
            let note = match (r.expert_layout, r.packed_rank) {
                (Some(ExpertLayout::PerExpert), Some(p)) => format!("packed as r·E = {p}"),
                (Some(l), _) => l.as_str().to_string(),
                _ => String::new(),
            };
            md += &format!(
                "| {} | {} | {} | {note} |\n",
                opt(r.attention_rank),
                opt(r.expert_rank),
                r.adapters
            );
        }

        md += "\n## Expert LoRA by layer\n\n";
        if self.expert_layers.sets.is_empty() {
            md += "No adapter carries expert LoRA.\n";
        } else {
            md += "| Expert layers | Layout | Adapters | Examples |\n|---|---|---:|---|\n";
            for s in &self.expert_layers.sets {
                md += &format!(
                    "| {} | {} | {} | {} |\n",
                    layers(&s.layers),
                    s.expert_layout.map_or("–", |l| l.as_str()),
                    s.adapters,
                    cell(&s.examples.join(", "))
                );
            }
            md += &format!(
                "\nAdapters with expert LoRA, per layer: {}\n",
                self.expert_layers
                    .per_layer
                    .iter()
                    .map(|c| format!("{}: {}", c.value, c.count))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }

        if let Some(rows) = &self.health {
            md += "\n## Health\n\n| Pattern | Adapters | Data read | Dead | Non-finite | \
                   Not servable (vLLM) | Not servable (SGLang) | ✓ / ! / ✗ |\n\
                   |---|---:|---:|---:|---:|---:|---:|---|\n";
            for r in rows {
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                    r.pattern,
                    r.adapters,
                    r.data_checked,
                    r.dead,
                    r.non_finite,
                    r.not_servable_vllm,
                    r.not_servable_sglang,
                    r.ok,
                    r.warning,
                    r.error
                );
            }
            md +=
                "\nDead: a whole target or expert group is exactly zero. Not servable: the engine \
                   refuses the adapter or drops part of it (docs/health.md). Adapters whose data \
                   was not read (remote) are judged from headers only.\n";
        }

        md += "\n## Notes\n\n";
        if self.notes.is_empty() {
            md += "Nothing unusual.\n";
        }
        for n in &self.notes {
            md += &format!("- {}\n", crate::view::text::escape_line(n));
        }
        md
    }
}
