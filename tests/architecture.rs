//! The crate's shape (docs/architecture.md): the command line is a leaf that only `main.rs` uses,
//! and the top-level modules depend on each other one way, without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module of a file under `src/` (`src/compute/math.rs` → `compute`), or None for the
/// crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// `crate::X` paths named in the code (comments excluded), by top-level module X.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name.chars().next().unwrap().is_lowercase() {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(&src, &f) else {
            continue;
        };
        let refs = crate_refs(&std::fs::read_to_string(&f).unwrap());
        let deps = g.entry(m.clone()).or_default();
        deps.extend(refs.into_iter().filter(|r| *r != m));
    }
    g
}

#[test]
fn the_command_line_is_a_leaf() {
    let users: Vec<_> = graph()
        .into_iter()
        .filter(|(m, deps)| m != "cli" && deps.contains("cli"))
        .map(|(m, _)| m)
        .collect();
    assert!(users.is_empty(), "modules using crate::cli: {users:?}");
}

#[test]
fn runs_are_a_library_of_their_own() {
    // The run engine serves the command line and the explorer alike: it uses neither.
    let g = graph();
    let deps = g.get("run").expect("src/run exists");
    for ui in ["cli", "tui", "plot", "view"] {
        assert!(!deps.contains(ui), "run uses crate::{ui}: {deps:?}");
    }
    for lower in [
        "adapter", "compute", "hub", "synth", "base", "health", "export",
    ] {
        let d = g.get(lower).expect("module");
        assert!(!d.contains("run"), "{lower} uses crate::run");
    }
}

#[test]
fn modules_depend_one_way() {
    let g = graph();
    // Depth-first search for a back edge; report the cycle found.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}\nall dependencies: {g:#?}", c.join(" → "));
        }
    }
}

#[test]
fn the_check_sees_references() {
    // The scanner itself: a reference in code counts, one in a comment does not.
    let r = crate_refs(
        "use crate::compute::stats; // crate::cli\nlet x = crate::view::text::num(1.0);",
    );
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        vec!["compute".to_string(), "view".to_string()]
    );
}

/// The compute path's files import one way, the way the data flows: tensor (the mapped bytes)
/// → gram (Grams, factor × map products) → math (R, cores) → small_svd → kernel (CPU features).
#[test]
fn the_compute_path_imports_the_way_the_data_flows() {
    let order = ["tensor", "gram", "math", "small_svd", "kernel"];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/compute");
    for (i, file) in order.iter().enumerate() {
        let text = std::fs::read_to_string(dir.join(format!("{file}.rs"))).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (j, other) in order.iter().enumerate() {
                let named = [format!("compute::{other}"), format!("compute::{{{other}")]
                    .iter()
                    .any(|p| code.contains(p.as_str()))
                    || code.contains("compute::{") && code.contains(&format!(" {other}"));
                assert!(
                    j >= i || !named,
                    "{file}.rs imports {other} against the data flow: {line}"
                );
            }
        }
    }
}
