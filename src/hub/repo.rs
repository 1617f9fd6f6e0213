//! Repo references (`ORG/NAME[/SUB][@REV]`) and the path checks that keep names from the Hub
//! inside the folders they are joined to.

use crate::error::{Error, HubError, Result};
use std::str::FromStr;

/// A repo (and optionally one adapter folder in it) at a revision: `ORG/NAME[/SUB][@REV]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// `ORG/NAME`.
    pub repo: String,
    /// Branch, tag or commit; `main` by default.
    pub revision: String,
    /// An adapter folder inside the repo (`inspect --remote ORG/NAME/SUB`).
    pub sub: Option<String>,
}

impl RepoRef {
    /// The same repo at another revision.
    pub fn at(self, revision: &str) -> Result<RepoRef> {
        if !safe_rel_path(revision) {
            return Err(HubError::BadRepoId(format!("{}@{revision}", self.adapter_id())).into());
        }
        Ok(RepoRef {
            revision: revision.into(),
            ..self
        })
    }

    /// The id of the adapter this names: `ORG/NAME` or `ORG/NAME/SUB`.
    pub fn adapter_id(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}/{s}", self.repo),
            None => self.repo.clone(),
        }
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.adapter_id())?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

impl FromStr for RepoRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<RepoRef> {
        let bad = || Error::from(HubError::BadRepoId(s.to_string()));
        let (path, revision) = match s.trim().split_once('@') {
            Some((p, r)) if !r.is_empty() => (p, r),
            Some(_) => return Err(bad()),
            None => (s.trim(), "main"),
        };
        let comps: Vec<&str> = path.split('/').collect();
        // Hub names: letters, digits, `-`, `_`, `.`; no `--` (it separates parts of cache folders).
        let name_ok = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                && !c.starts_with(['.', '-'])
                && !c.contains("--")
                && !c.contains("..")
        };
        if comps.len() < 2 || !name_ok(comps[0]) || !name_ok(comps[1]) {
            return Err(bad());
        }
        let sub = (comps.len() > 2).then(|| comps[2..].join("/"));
        if sub.as_deref().is_some_and(|s| !safe_rel_path(s)) || !safe_rel_path(revision) {
            return Err(bad());
        }
        Ok(RepoRef {
            repo: format!("{}/{}", comps[0], comps[1]),
            revision: revision.to_string(),
            sub,
        })
    }
}

/// Repo ids from `report --remote LIST`: a file with one id per line (`#` starts a comment), or
/// ids separated by commas.
pub fn parse_list(text: &str) -> Result<Vec<RepoRef>> {
    text.split(['\n', ','])
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::parse)
        .collect()
}

/// A relative path that stays inside the folder it is joined to.
pub(super) fn safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A name safe as one path component (commit hashes, etags).
pub(super) fn safe_component(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        let r: RepoRef = "org/name".parse().unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str(), r.sub.as_deref()),
            ("org/name", "main", None)
        );
        let r: RepoRef = "org/name/sub@v1.0".parse().unwrap();
        assert_eq!(
            (r.repo.as_str(), r.revision.as_str(), r.sub.as_deref()),
            ("org/name", "v1.0", Some("sub"))
        );
        assert_eq!(r.to_string(), "org/name/sub@v1.0");
        for bad in [
            "",
            "name",
            "org/",
            "/name",
            "org/na me",
            "org/../x",
            "org/name@",
            "a--b/c",
            "org/name/../x",
            "org/name@../x",
        ] {
            assert!(bad.parse::<RepoRef>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn lists() {
        let l = parse_list("a/b\n# comment\n\nc/d@dev # trailing\n").unwrap();
        assert_eq!(
            l.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["a/b", "c/d@dev"]
        );
        let l = parse_list("a/b, c/d").unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_list("a/b, nope").is_err());
    }
}
