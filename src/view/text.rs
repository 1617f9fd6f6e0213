//! Text of numbers, sizes, layer lists and names, shared by every view (CLI tables, the explorer,
//! plots, the report), and the escaping that keeps names from driving a terminal.

use crate::adapter::target::Target;

/// The pattern of a list row: a base model says how many adapters of the list use it.
pub fn pattern_cell(p: crate::adapter::Pattern, base_of: usize) -> String {
    match p {
        crate::adapter::Pattern::BaseModel => format!("{} ({base_of})", p.as_str()),
        _ => p.as_str().to_string(),
    }
}

/// `1.5 GB`, `12.0 MB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `-` for none.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}

/// Runs of consecutive values of a sorted list: `[0, 1, 2, 7]` → `[(0, 2), (7, 7)]`.
pub fn runs(v: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(x) => *hi = x,
            _ => out.push((x, x)),
        }
    }
    out
}

/// Compact layer list for tables: `7,15,23`, `0-23` (a run of two is written out: `3,4`).
pub fn layers(v: &[usize]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = runs(v)
        .into_iter()
        .map(|(lo, hi)| match hi - lo {
            0 => lo.to_string(),
            1 => format!("{lo},{hi}"),
            _ => format!("{lo}-{hi}"),
        })
        .collect();
    parts.join(",")
}

/// Layer list for sentences: `0–3, 7, 15`.
pub fn layers_prose(v: &[usize]) -> String {
    let parts: Vec<String> = runs(v)
        .into_iter()
        .map(|(lo, hi)| match hi - lo {
            0 => lo.to_string(),
            _ => format!("{lo}–{hi}"),
        })
        .collect();
    parts.join(", ")
}

/// Four significant digits, scientific when small or large.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        // NaN/inf come from non-finite factors: a marker, never a number.
        "non-finite".into()
    } else if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1e-3 && x.abs() < 1e5 {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

/// Makes text safe to print on a terminal: control characters other than newline and tab (C0,
/// DEL, and C1 such as U+009B, a one-character CSI) become visible escapes (`\x1b`, `\u{9b}`), so
/// tensor, file and folder names or error messages cannot set the title or clear the screen.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// As [`escape_controls`], for text that must stay on one line (a table cell, a list entry):
/// newline and tab are escaped too (`\n`, `\t`), so that a name from a server or a folder
/// cannot print rows of its own.
pub fn escape_line(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s, |_| false)
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !keep(c);
    if !s.contains(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !bad(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `q,k,v,o,gate_up,down`: target names, short, in table order.
pub fn compact_targets<S: AsRef<str>>(t: &[S]) -> String {
    let mut v: Vec<Target> = t.iter().map(|x| Target::parse(x.as_ref())).collect();
    v.sort();
    v.dedup();
    let s: Vec<&str> = v.iter().map(Target::short).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

/// A tensor name from its layer on (`self_attn.q_proj.lora_A.weight`).
pub fn short_name(name: &str) -> &str {
    for w in ["layers.", "layer.", "h.", "blocks.", "block."] {
        if let Some(i) = name.find(w) {
            let rest = &name[i + w.len()..];
            if let Some(dot) = rest.find('.') {
                if rest[..dot].chars().all(|c| c.is_ascii_digit()) {
                    return &rest[dot + 1..];
                }
            }
        }
    }
    name.strip_prefix("base_model.model.").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, escape_line, layers, layers_prose};

    #[test]
    fn layer_lists_share_their_runs() {
        let v = [0, 1, 2, 3, 7, 9, 10, usize::MAX];
        assert_eq!(layers(&v), format!("0-3,7,9,10,{}", usize::MAX));
        assert_eq!(layers_prose(&v), format!("0–3, 7, 9–10, {}", usize::MAX));
        assert_eq!(
            (layers(&[]), layers_prose(&[])),
            ("-".into(), String::new())
        );
    }

    #[test]
    fn escapes_c0_del_and_c1_but_keeps_lines() {
        assert_eq!(
            escape_controls("a\x1b]0;t\x07b\x7f\u{9b}2J\n\tc"),
            "a\\x1b]0;t\\x07b\\x7f\\u{9b}2J\n\tc"
        );
        assert_eq!(escape_controls("plain é"), "plain é");
        assert_eq!(escape_line("a\nb\tc\u{9b}"), "a\\nb\\tc\\u{9b}");
    }
}
