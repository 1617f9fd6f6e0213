//! Discovery on the Hub: the adapters of a base model from the model search
//! (`GET /api/models?filter=base_model:adapter:ORG/NAME`, following `Link: <…>; rel="next"`),
//! then each repo's headers, `concurrency` repos at a time, through the header cache.
//!
//! One search answer carries each repo's commit sha and file list (`expand=sha`,
//! `expand=siblings`), so a repo whose commit the header cache holds costs no request at all.
//! Upstream facts: `docs/hub.md` (huggingface_hub `hf_api.py` `list_models`,
//! `utils/_pagination.py`).

use super::{
    network, protocol, safe_component, safe_rel_path, Hub, RepoInfo, RepoRef, SurveyStats,
};
use crate::adapter::layout::LayoutOptions;
use crate::adapter::Adapter;
use crate::error::{Error, HubError, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The base model `report --remote` and `scan --remote` search when none is named.
pub const DEFAULT_BASE: &str = "openai/gpt-oss-20b";

/// The base a discovery searches when none is named: [`DEFAULT_BASE`] when one of `bases` (the
/// local adapters' `base_model_name_or_path`) names it or when none is a Hub id, else the Hub id
/// named most often.
pub fn default_base<S: AsRef<str>>(bases: impl Iterator<Item = S>) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for b in bases {
        if let Ok(r) = b.as_ref().parse::<RepoRef>() {
            if r.sub.is_none() && r.revision == "main" {
                *counts.entry(r.repo).or_default() += 1;
            }
        }
    }
    if counts.contains_key(DEFAULT_BASE) {
        return DEFAULT_BASE.into();
    }
    // Most often named; ties go to the first id in order, so the choice is stable.
    let mut best: Option<(&String, usize)> = None;
    for (k, &n) in &counts {
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((k, n));
        }
    }
    best.map_or_else(|| DEFAULT_BASE.into(), |(k, _)| k.clone())
}

/// Largest page asked for (huggingface.js asks for at most 500 per page).
const MAX_PAGE: usize = 500;

/// Pages followed at most: a server whose `next` links never end cannot hold a scan forever.
const MAX_PAGES: usize = 10_000;

/// The largest search page read (reading stops past it). A real page of 500 adapter repos with
/// their file lists is well under 2 MB.
pub const MAX_SEARCH_PAGE_BYTES: u64 = 16 << 20;

/// The most search answers one search reads in all, and so about the most it keeps in memory
/// (a few tens of thousands of repos with their file lists).
pub const MAX_SEARCH_BYTES: u64 = 64 << 20;

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// `ORG/NAME`: adapters whose card names it as their base (`base_model:adapter:ORG/NAME`).
    pub base: Option<String>,
    /// Text contained in the repo id (`search=`).
    pub search: Option<String>,
    /// Owner (`author=`).
    pub author: Option<String>,
    /// At most this many repos.
    pub limit: Option<usize>,
}

/// Fields of the search answer shown next to a remote adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HubMeta {
    /// Downloads over the last 30 days (the Hub's `downloads`).
    pub downloads: Option<u64>,
    pub likes: Option<u64>,
    /// Date of the last commit (`lastModified`, ISO 8601).
    pub last_modified: Option<String>,
    /// `"auto"` or `"manual"` when the repo is gated.
    #[serde(skip)]
    pub gated: Option<String>,
}

/// A repo as the search lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The repo id as the Hub wrote it (checked: `repo` is None when it is not a valid id).
    pub id: String,
    pub repo: Option<RepoRef>,
    /// Commit sha and files, when the answer carried them (and they were usable).
    pub info: Option<RepoInfo>,
    pub meta: HubMeta,
}

/// An adapter found on the Hub, with what the search said about its repo.
#[derive(Debug)]
pub struct HubAdapter {
    pub adapter: Adapter,
    pub meta: HubMeta,
}

#[derive(Deserialize)]
struct Item {
    id: Option<String>,
    #[serde(rename = "modelId")]
    model_id: Option<String>,
    sha: Option<String>,
    siblings: Option<Vec<Sibling>>,
    downloads: Option<u64>,
    likes: Option<u64>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
    gated: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

impl Item {
    fn into_listed(self, url: &str) -> Option<Listed> {
        let id = self.id.or(self.model_id)?;
        let repo: Option<RepoRef> = id.parse().ok().filter(|r: &RepoRef| r.sub.is_none());
        let info = match (self.sha, self.siblings) {
            (Some(sha), Some(sib)) => {
                checked_info(url, sha, sib.into_iter().map(|s| s.rfilename)).ok()
            }
            _ => None,
        };
        let gated = match self.gated {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Bool(true)) => Some("true".into()),
            _ => None,
        };
        Some(Listed {
            id,
            repo,
            info,
            meta: HubMeta {
                downloads: self.downloads,
                likes: self.likes,
                last_modified: self.last_modified,
                gated,
            },
        })
    }
}

/// A sha and file list as the Hub gave them, refused when a name could leave its folder.
pub(super) fn checked_info(
    url: &str,
    sha: String,
    files: impl Iterator<Item = String>,
) -> Result<RepoInfo> {
    if !safe_component(&sha) {
        return Err(protocol(url, format!("commit '{sha}' is not a hash")));
    }
    let mut out = Vec::new();
    for f in files {
        if !safe_rel_path(&f) {
            return Err(protocol(url, format!("unsafe file name '{f}'")));
        }
        out.push(f);
    }
    out.sort();
    Ok(RepoInfo { sha, files: out })
}

/// The `rel="next"` target of a `Link` header (`<URL>; rel="next", <URL>; rel="…"`).
pub(super) fn next_link(link: &str) -> Option<&str> {
    let mut rest = link;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let url = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(url);
        }
        rest = &rest[params_end..];
    }
    None
}

impl Hub {
    /// The first page's URL: the filters, a page size, and the fields scan needs (`expand`).
    fn search_url(&self, q: &SearchQuery) -> Result<reqwest::Url> {
        let base = format!("{}/api/models", self.cfg.endpoint);
        let mut url =
            reqwest::Url::parse(&base).map_err(|e| network(&base, format!("bad URL: {e}")))?;
        {
            let mut p = url.query_pairs_mut();
            if let Some(b) = &q.base {
                p.append_pair("filter", &format!("base_model:adapter:{b}"));
            }
            if let Some(s) = &q.search {
                p.append_pair("search", s);
            }
            if let Some(a) = &q.author {
                p.append_pair("author", a);
            }
            let page = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
            p.append_pair("limit", &page.to_string());
            for e in [
                "sha",
                "siblings",
                "downloads",
                "likes",
                "lastModified",
                "gated",
            ] {
                p.append_pair("expand", e);
            }
        }
        Ok(url)
    }

    /// Every repo the search lists, page after page (each page retried like any metadata
    /// request, `Retry-After` honoured), at most `q.limit`. The token follows the same rule as
    /// everywhere: a `next` link to another origin is followed without it. A page is at most
    /// [`MAX_SEARCH_PAGE_BYTES`], all pages together at most [`MAX_SEARCH_BYTES`], and a `next`
    /// link to a page already read is an error: a hostile or broken server cannot grow memory
    /// or loop.
    pub async fn search(&self, q: &SearchQuery) -> Result<Vec<Listed>> {
        if q.limit == Some(0) {
            return Ok(vec![]);
        }
        let mut url = self.search_url(q)?;
        let mut out = Vec::new();
        let mut read = 0u64;
        let mut visited = std::collections::HashSet::from([url.to_string()]);
        for page in 1..=MAX_PAGES {
            let (body, link) = self.get_page(url.as_str(), MAX_SEARCH_PAGE_BYTES).await?;
            read += body.len() as u64;
            if read > MAX_SEARCH_BYTES {
                return Err(protocol(
                    url.as_str(),
                    format!(
                        "the search answers add up to more than {} MiB ({page} pages, {} repos): \
                         narrow it with --search, --author or --limit",
                        MAX_SEARCH_BYTES >> 20,
                        out.len()
                    ),
                ));
            }
            let items: Vec<Item> = serde_json::from_slice(&body).map_err(|e| {
                protocol(
                    url.as_str(),
                    format!("the model search answer is not the expected JSON list ({e})"),
                )
            })?;
            for it in items {
                if q.limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
                if let Some(l) = it.into_listed(url.as_str()) {
                    out.push(l);
                }
            }
            if q.limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
            let Some(next) = link.as_deref().and_then(next_link) else {
                return Ok(out);
            };
            let next = url
                .join(next)
                .map_err(|e| protocol(url.as_str(), format!("bad next link '{next}': {e}")))?;
            if !visited.insert(next.to_string()) {
                return Err(protocol(
                    url.as_str(),
                    format!(
                        "the search's next link leads back to a page already read ({next}): \
                         the server's pages loop"
                    ),
                ));
            }
            url = next;
        }
        Err(protocol(
            url.as_str(),
            format!("more than {MAX_PAGES} pages of results"),
        ))
    }

    /// Lists with [`Hub::search`], then reads each repo's headers `concurrency` at a time (the
    /// header cache first). A repo that cannot be read is one `error` row and the others go on;
    /// gated repos say whether the token is missing or does not grant access. `progress` gets
    /// (repos done, repos listed).
    pub async fn discover(
        &self,
        q: &SearchQuery,
        opts: LayoutOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(Vec<HubAdapter>, SurveyStats)> {
        let mut rows = Vec::new();
        let stats = self
            .discover_each(q, opts, progress, |r| rows.extend(r))
            .await?;
        Ok((rows, stats))
    }

    /// [`Hub::discover`], handing each repo's rows to `each` as soon as they and those of the
    /// repos listed before it are read (the search's order), so that a caller can show the
    /// first rows while the rest are read (the explorer's Hub source).
    pub async fn discover_each(
        &self,
        q: &SearchQuery,
        opts: LayoutOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
        mut each: impl FnMut(Vec<HubAdapter>),
    ) -> Result<SurveyStats> {
        let before = self.bytes_received();
        let listed = self.search(q).await?;
        let n = listed.len();
        progress(0, n);
        let done = AtomicUsize::new(0);
        let mut results = futures::stream::iter(listed)
            .map(|l| {
                let done = &done;
                async move {
                    let (adapters, failed) = match self.listed_adapters(&l, opts).await {
                        Ok(v) => (v, false),
                        Err(e) => {
                            let r = RepoRef {
                                repo: l.repo.as_ref().map_or(l.id.clone(), |r| r.repo.clone()),
                                revision: l.info.as_ref().map_or("main".into(), |i| i.sha.clone()),
                                sub: None,
                            };
                            (vec![self.failed(&r, &e)], true)
                        }
                    };
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, n);
                    let rows: Vec<HubAdapter> = adapters
                        .into_iter()
                        .map(|adapter| HubAdapter {
                            adapter,
                            meta: l.meta.clone(),
                        })
                        .collect();
                    (rows, failed)
                }
            })
            .buffered(self.cfg.concurrency.max(1));
        let (mut failed, mut bytes_total) = (0, 0);
        while let Some((rows, f)) = results.next().await {
            failed += usize::from(f);
            bytes_total += rows.iter().map(|r| r.adapter.bytes()).sum::<u64>();
            each(rows);
        }
        Ok(SurveyStats {
            repos: n,
            failed,
            bytes_transferred: self.bytes_received() - before,
            bytes_total,
        })
    }

    /// One listed repo's adapters: the search's sha and files when it gave them, else the repo
    /// info endpoint's.
    async fn listed_adapters(&self, l: &Listed, opts: LayoutOptions) -> Result<Vec<Adapter>> {
        let repo = l
            .repo
            .clone()
            .ok_or_else(|| Error::from(HubError::BadRepoId(l.id.clone())))?;
        let info = match &l.info {
            Some(i) => i.clone(),
            None => self.repo_info(&repo).await?,
        };
        let repo = RepoRef {
            revision: info.sha.clone(),
            ..repo
        };
        self.adapters_at(&repo, info, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"<https://h/api/models?cursor=abc%3D>; rel="next""#),
            Some("https://h/api/models?cursor=abc%3D")
        );
        assert_eq!(
            next_link(r#"<https://h/x>; rel="xet-auth", <https://h/n?c=1>; rel="next""#),
            Some("https://h/n?c=1")
        );
        assert_eq!(next_link(r#"<https://h/p>; rel="prev""#), None);
        assert_eq!(
            next_link(r#"</api/models?c=2>;rel=next"#),
            Some("/api/models?c=2")
        );
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("<unterminated"), None);
    }

    #[test]
    fn default_bases() {
        let none: [&str; 0] = [];
        assert_eq!(default_base(none.iter()), DEFAULT_BASE);
        assert_eq!(default_base(["/local/path", "x"].iter()), DEFAULT_BASE);
        assert_eq!(default_base(["a/b", "c/d", "c/d", "/tmp/m"].iter()), "c/d");
        assert_eq!(
            default_base(["c/d", "c/d", "openai/gpt-oss-20b"].iter()),
            DEFAULT_BASE
        );
    }

    #[test]
    fn items() {
        let it: Item = serde_json::from_str(
            r#"{"id":"o/n","sha":"abc","siblings":[{"rfilename":"b"},{"rfilename":"a"}],
                "downloads":3,"likes":1,"lastModified":"2025-08-10T00:00:00.000Z","gated":"manual"}"#,
        )
        .unwrap();
        let l = it.into_listed("u").unwrap();
        assert_eq!(l.repo.unwrap().repo, "o/n");
        assert_eq!(l.info.unwrap().files, ["a", "b"]);
        assert_eq!(l.meta.gated.as_deref(), Some("manual"));
        let bad: Item =
            serde_json::from_str(r#"{"id":"o/n","sha":"abc","siblings":[{"rfilename":"../x"}]}"#)
                .unwrap();
        assert!(bad.into_listed("u").unwrap().info.is_none());
        let bad_id: Item = serde_json::from_str(r#"{"id":"../../etc"}"#).unwrap();
        assert!(bad_id.into_listed("u").unwrap().repo.is_none());
    }
}
