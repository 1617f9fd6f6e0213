//! Checks that a plot's selection (targets, layers, experts) has data, with messages that say
//! what there is instead.

use super::*;

pub(super) fn list_layers(s: &BTreeSet<usize>) -> String {
    let v: Vec<usize> = s.iter().copied().collect();
    if v.is_empty() {
        "none".into()
    } else {
        crate::view::text::layers_prose(&v)
    }
}

pub(super) fn list(v: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = v.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Checks that the selection has data, with messages that say what there is instead.
pub(super) fn check_selection(
    ids: &str,
    stats: &[&AdapterStats],
    opts: &PlotOptions,
) -> Result<()> {
    let deltas = || stats.iter().flat_map(|s| s.deltas.iter());
    if deltas().next().is_none() {
        return Err(Error::Other(format!("{ids}: no LoRA deltas to plot")));
    }
    if let Some(t) = &opts.target {
        if !deltas().any(|d| &d.target == t) {
            let ts: BTreeSet<&Target> = deltas().map(|d| &d.target).collect();
            return Err(Error::Other(format!(
                "{ids}: no delta with target {t} (targets: {})",
                list(ts.into_iter().map(Target::to_string))
            )));
        }
    }
    if let Some(l) = opts.layer {
        let sel = |d: &&DeltaStats| opts.target.as_ref().is_none_or(|t| &d.target == t);
        if !deltas().filter(sel).any(|d| d.layer == Some(l)) {
            let ls: BTreeSet<usize> = deltas().filter(sel).filter_map(|d| d.layer).collect();
            return Err(Error::Other(format!(
                "{ids}: no delta{} at layer {l} (layers: {})",
                opts.target
                    .as_ref()
                    .map_or(String::new(), |t| format!(" of {t}")),
                list_layers(&ls)
            )));
        }
    }
    Ok(())
}

/// The expert target of an experts plot: the one asked for, else the first with expert deltas.
pub(super) fn expert_target(
    ids: &str,
    all: &[(Target, bool)],
    asked: Option<&str>,
) -> Result<Target> {
    let split: Vec<&Target> = all.iter().filter(|(_, s)| *s).map(|(t, _)| t).collect();
    match asked {
        Some(t) if split.iter().any(|s| *s == t) => Ok(Target::parse(t)),
        Some(t) => Err(Error::Other(format!(
            "{ids}: {t} has no per-expert LoRA deltas, so there is no experts plot of it \
             (targets with experts: {})",
            list(split.iter().map(|s| s.to_string()))
        ))),
        None => split.first().map(|&s| s.clone()).ok_or_else(|| {
            Error::Other(format!(
                "{ids} has no per-expert LoRA deltas (targets: {}): nothing to draw in an experts \
                 plot; the layers plot shows every target",
                list(all.iter().map(|(t, _)| t.to_string()))
            ))
        }),
    }
}
