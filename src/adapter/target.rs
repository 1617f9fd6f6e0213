//! What a delta changes (`q_proj`, the router, an expert projection, …) and which delta it is.
//!
//! Targets and delta identities are typed so that there is one display rule, one table order and
//! one notion of "expert target"; they serialise as the strings of the JSON contracts.

use serde::{Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// The module a delta changes, by its canonical name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Router,
    /// gpt-oss fuses gate and up into one expert projection.
    GateUp,
    Gate,
    Up,
    Down,
    Embed,
    /// Any other module name (kept verbatim).
    Other(String),
}

/// Table order, then names: the order every table, map and plot uses. A `static`: a `const`
/// array of a type with a `String` variant is built and dropped at every use (the scan sorts
/// thousands of deltas by target).
static KNOWN: [(Target, &str); 10] = [
    (Target::Q, "q_proj"),
    (Target::K, "k_proj"),
    (Target::V, "v_proj"),
    (Target::O, "o_proj"),
    (Target::Router, "router"),
    (Target::GateUp, "gate_up_proj"),
    (Target::Gate, "gate_proj"),
    (Target::Up, "up_proj"),
    (Target::Down, "down_proj"),
    (Target::Embed, "embed_tokens"),
];

impl Target {
    /// The target a canonical module name denotes (`w1`/`w2`/`w3` are mapped by the layout step).
    pub fn parse(name: &str) -> Target {
        KNOWN
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| Target::Other(name.to_string()))
    }

    /// The canonical name, as in JSON and on the command line.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Other(s) => s,
            t => KNOWN[t.order()].1,
        }
    }

    /// The short label of maps and plots: the name without its `_proj` suffix.
    pub fn short(&self) -> &str {
        short_name(self.as_str())
    }

    /// Position in the table order (every unknown target after the known ones).
    pub fn order(&self) -> usize {
        match self {
            Target::Q => 0,
            Target::K => 1,
            Target::V => 2,
            Target::O => 3,
            Target::Router => 4,
            Target::GateUp => 5,
            Target::Gate => 6,
            Target::Up => 7,
            Target::Down => 8,
            Target::Embed => 9,
            Target::Other(_) => KNOWN.len(),
        }
    }

    /// Expert targets are the ones whose deltas may be per expert.
    pub fn is_expert(&self) -> bool {
        matches!(
            self,
            Target::GateUp | Target::Gate | Target::Up | Target::Down
        )
    }
}

/// The display rule for a target name given as text (e.g. from a header): `gate_up_proj` → `gate_up`.
pub fn short_name(name: &str) -> &str {
    name.strip_suffix("_proj").unwrap_or(name)
}

impl Ord for Target {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Target::Other(a), Target::Other(b)) => a.cmp(b),
            _ => self.order().cmp(&other.order()),
        }
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl From<&str> for Target {
    fn from(name: &str) -> Target {
        Target::parse(name)
    }
}

impl From<String> for Target {
    fn from(name: String) -> Target {
        Target::parse(&name)
    }
}

impl PartialEq<str> for Target {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Target {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Target {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Target> for String {
    fn eq(&self, other: &Target) -> bool {
        other == self
    }
}

/// Which delta: the identity that matches deltas across adapters, statistics and map cells
/// (serialised as the `layer`, `target`, `expert` fields of the JSON contracts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DeltaKey {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
}

impl DeltaKey {
    pub fn new(layer: Option<usize>, target: impl Into<Target>, expert: Option<usize>) -> Self {
        DeltaKey {
            layer,
            target: target.into(),
            expert,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_table_order() {
        for (t, n) in KNOWN.iter() {
            assert_eq!(Target::parse(n), *t);
            assert_eq!(t.as_str(), *n);
        }
        let mut v: Vec<Target> = ["zz", "down_proj", "aa", "q_proj", "router"]
            .into_iter()
            .map(Target::parse)
            .collect();
        v.sort();
        let names: Vec<&str> = v.iter().map(Target::as_str).collect();
        assert_eq!(names, ["q_proj", "router", "down_proj", "aa", "zz"]);
        assert_eq!(Target::GateUp.short(), "gate_up");
        assert_eq!(Target::Router.short(), "router");
        assert_eq!(Target::parse("lm_head"), Target::Other("lm_head".into()));
        assert_eq!(
            serde_json::to_string(&Target::Down).unwrap(),
            "\"down_proj\""
        );
    }
}
