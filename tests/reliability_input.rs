//! Hostile input (issue 14): headers whose shapes claim more than their data holds, names with
//! huge indices, ranks above the matrix dims, configs with thousands of pattern keys, and
//! kohya alphas that are not scalars. Each must give a clear error (or a correct result) for
//! that adapter, in bounded time and memory, while the rest goes on.

mod support;

use faer::Mat;
use lorascope::adapter::config;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::{Adapter, Kind, Source};
use lorascope::compute::compare;
use lorascope::compute::math::RANK_TOL;
use lorascope::compute::stats::{self, Control, DeltaStats, Filter};
use lorascope::plot::{self, PlotKind, PlotOptions};
use lorascope::synth::{self, Dims, Pattern, Spec, TensorData};
use safetensors::Dtype;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{lorascope_limited, read_factor, Hub};

/// Address space for the binary in these tests: ample for toy adapters, far below what the
/// hostile ones used to ask for (2^40 deltas, a 34 GB Gram matrix, a 64 GB grid).
const LIMIT_KIB: u64 = 2 << 20;

const Q: &str = "base_model.model.model.layers";

/// A tensor with data (F32) or with no data at all (an empty shape).
fn t(name: &str, shape: &[usize], values: Option<Vec<f64>>) -> TensorData {
    TensorData {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: Some(values.map_or(vec![], |v| synth::encode(&v, Dtype::F32))),
    }
}

/// Deterministic pseudo-random values.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = synth::Rng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// A LoRA pair (B: out×r, A: r×in) with random data under `module`.
fn pair(module: &str, out: usize, inn: usize, r: usize, seed: u64) -> Vec<TensorData> {
    vec![
        t(
            &format!("{module}.lora_A.weight"),
            &[r, inn],
            Some(values(r * inn, seed)),
        ),
        t(
            &format!("{module}.lora_B.weight"),
            &[out, r],
            Some(values(out * r, seed + 1)),
        ),
    ]
}

fn image(tensors: &[TensorData]) -> Vec<u8> {
    synth::safetensors_bytes(tensors, true)
}

/// Writes an adapter folder (safetensors + optional config) and returns its path.
fn write_dir(root: &Path, name: &str, tensors: &[TensorData], config: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("adapter_model.safetensors"), image(tensors)).expect("write");
    if let Some(c) = config {
        std::fs::write(dir.join("adapter_config.json"), c).expect("config");
    }
    dir
}

fn load(dir: &Path) -> Adapter {
    let src = Source {
        history: None,
        id: dir.display().to_string(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: vec![dir.join("adapter_model.safetensors")],
        revision: None,
        problem: None,
        other_files: vec![],
    };
    Adapter::load(&src, LayoutOptions::default())
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

fn row<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array()
        .expect("array")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {rows}"))
}

// ---------------------------------------------------------------------------------------------
// 2. counts derived from a header are bounded by the data and by sane limits

/// Such a module is not read (issue 23: its tensors are `unknown`, `check` names it), and no
/// header makes lorascope allocate what its shapes claim.
#[test]
fn shapes_claiming_more_than_the_data_holds_are_not_read_and_the_scan_goes_on() {
    let hub = Hub::new();
    let mut good = Spec::new(Dims::TOY, Pattern::Tinker3d);
    good.seed = 5;
    hub.add("org/good", &good);
    let ex = format!("{Q}.0.mlp.experts");
    // Tinker 3D with 2^40 experts and a zero dim: a valid 300-byte header, no data.
    let huge = 1usize << 40;
    let zero_3d = [
        t(&format!("{ex}.w1.lora_A.weight"), &[huge, 0, 12], None),
        t(&format!("{ex}.w1.lora_B.weight"), &[huge, 10, 0], None),
    ];
    // PEFT packed experts with empty factors: 2^40 rows of nothing at per-expert rank 1.
    let zero_packed = [
        t(&format!("{ex}.lora_A.weight"), &[huge, 0], None),
        t(&format!("{ex}.base_layer.lora_B.weight"), &[0, huge], None),
        t(&format!("{ex}.base_layer.lora_A.weight"), &[huge, 0], None),
        t(&format!("{ex}.lora_B.weight"), &[0, huge], None),
    ];
    // Real data, but more experts than any model has (5000 × 1 × 1).
    let many = 5000;
    let many_experts = [
        t(
            &format!("{ex}.w1.lora_A.weight"),
            &[many, 1, 1],
            Some(values(many, 1)),
        ),
        t(
            &format!("{ex}.w1.lora_B.weight"),
            &[many, 1, 1],
            Some(values(many, 2)),
        ),
    ];
    assert!(image(&zero_3d).len() < 400, "a few hundred bytes");
    let cfg = r#"{"r": 1, "lora_alpha": 1, "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]}"#;
    hub.add_files(
        "evil/zero-3d",
        &[("adapter_model.safetensors", &image(&zero_3d))],
    );
    hub.add_files(
        "evil/zero-packed",
        &[
            ("adapter_model.safetensors", &image(&zero_packed)),
            ("adapter_config.json", cfg.as_bytes()),
        ],
    );
    hub.add_files(
        "evil/many-experts",
        &[("adapter_model.safetensors", &image(&many_experts))],
    );
    let root = hub.root.to_str().expect("utf-8");
    let out = lorascope_limited(
        &["scan", "--cache", root, "--json"],
        hub.dir.path(),
        &[],
        LIMIT_KIB,
    );
    let rows = json(&out);
    assert_eq!(rows.as_array().expect("array").len(), 4, "{rows}");
    let g = row(&rows, "org/good");
    assert_eq!(g["kind"], "lora");
    assert_eq!(g["experts"], 4);
    let evil = [
        ("evil/zero-3d", "zero dimension", 2),
        ("evil/zero-packed", "zero dimension", 4),
        (
            "evil/many-experts",
            "5000 experts, more than lorascope accepts (4096)",
            2,
        ),
    ];
    for (id, says, tensors) in evil {
        let r = row(&rows, id);
        assert_eq!(
            (&r["kind"], &r["error"]),
            (&"lora".into(), &Value::Null),
            "{id}: {r}"
        );
        assert_eq!(
            (&r["deltas"], &r["unrecognised"]),
            (&0.into(), &tensors.into()),
            "{id}"
        );
        let notes = r["notes"].to_string();
        assert!(notes.contains(says), "{id}: {notes} should say {says:?}");
    }
    let out = lorascope_limited(
        &["check", "--cache", root, "--json", "--fail-on", "never"],
        hub.dir.path(),
        &[],
        LIMIT_KIB,
    );
    let checked = json(&out);
    for (id, says, _) in evil {
        let findings = row(&checked, id)["findings"].to_string();
        assert!(
            findings.contains("incomplete-pair") && findings.contains(says),
            "{id}: {findings}"
        );
    }
    // The text table and the report survive the same cache.
    let table = lorascope_limited(&["scan", "--cache", root], hub.dir.path(), &[], LIMIT_KIB);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("org/good"));
    let report = lorascope_limited(
        &["report", "--cache", root, "--format", "json"],
        hub.dir.path(),
        &[],
        LIMIT_KIB,
    );
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. huge layer and expert indices in names

#[test]
fn plots_of_huge_layer_and_expert_indices_use_the_indices_present() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let max = usize::MAX.to_string();
    let mut tensors = vec![];
    for (i, layer) in ["0", "4000000000", max.as_str()].iter().enumerate() {
        tensors.extend(pair(
            &format!("{Q}.{layer}.self_attn.q_proj"),
            6,
            5,
            2,
            10 * i as u64,
        ));
    }
    for (i, e) in ["0", "4000000000"].iter().enumerate() {
        tensors.extend(pair(
            &format!("{Q}.1.mlp.experts.{e}.down_proj"),
            4,
            3,
            2,
            100 + 10 * i as u64,
        ));
    }
    // A number past usize is not a layer (and no panic).
    tensors.extend(pair(
        &format!("{Q}.99999999999999999999999.self_attn.k_proj"),
        6,
        5,
        2,
        200,
    ));
    let dir = write_dir(tmp.path(), "huge", &tensors, None);
    let a = load(&dir);
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert_eq!(a.experts(), Some(4_000_000_001));
    let st = stats::compute(&a, &Filter::default(), &Control::default()).expect("stats");

    let r = plot::render(&st, None, &PlotOptions::new(PlotKind::Layers)).expect("layers plot");
    let mut rows: Vec<&str> = r.cells.iter().map(|c| c.row.as_str()).collect();
    rows.dedup();
    assert_eq!(rows, ["0", "1", "4000000000", max.as_str(), "none"]);
    let mut ex = PlotOptions::new(PlotKind::Experts);
    ex.target = Some("down_proj".into());
    let r = plot::render(&st, None, &ex).expect("experts plot");
    let cols: std::collections::BTreeSet<&str> = r.cells.iter().map(|c| c.col.as_str()).collect();
    assert_eq!(cols.into_iter().collect::<Vec<_>>(), ["0", "4000000000"]);

    // The binary too, under a memory limit, leaving no temporary file behind.
    let outdir = tmp.path().join("out");
    std::fs::create_dir_all(&outdir).expect("mkdir");
    for kind in ["layers", "experts"] {
        let png = outdir.join(format!("{kind}.png"));
        let out = lorascope_limited(
            &[
                "plot",
                dir.to_str().expect("utf-8"),
                "--kind",
                kind,
                "--out",
                png.to_str().expect("utf-8"),
            ],
            tmp.path(),
            &[],
            LIMIT_KIB,
        );
        assert!(
            out.status.success(),
            "{kind}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(png.is_file());
    }
    let names: Vec<String> = std::fs::read_dir(&outdir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. ranks above the matrix dims

/// ΔW = s·B·A densely, from the file.
fn dense(a: &Adapter, i: usize) -> Mat<f64> {
    let d = &a.deltas[i];
    let (out, r, b) = read_factor(a, d.b);
    let (r2, inn, av) = read_factor(a, d.a);
    assert_eq!(r, r2);
    Mat::from_fn(out, inn, |o, j| {
        d.scale * (0..r).map(|k| b[o * r + k] * av[k * inn + j]).sum::<f64>()
    })
}

/// Every statistic against its definition on the dense matrix's singular values.
fn check_against_dense(got: &DeltaStats, m: &Mat<f64>) {
    let mut sig = m.singular_values().expect("svd");
    sig.sort_by(|a, b| b.total_cmp(a));
    let s1 = sig[0];
    let close = |x: f64, y: f64, what: &str| {
        assert!(
            (x - y).abs() <= 1e-9 * y.abs().max(s1),
            "{what}: {x} vs {y}"
        );
    };
    // A rank-r product lists r values; beyond min(out, in) they are exact zeros.
    assert_eq!(got.singular_values.len(), got.rank);
    for (k, x) in got.singular_values.iter().enumerate() {
        match sig.get(k) {
            Some(y) => close(*x, *y, &format!("σ{k}")),
            None => assert_eq!(*x, 0.0, "σ{k} beyond the dims"),
        }
    }
    let e2: f64 = sig.iter().map(|x| x * x).sum();
    let sum: f64 = sig.iter().sum();
    close(got.fro_norm, e2.sqrt(), "fro");
    close(got.spectral_norm, s1, "spectral");
    close(got.stable_rank, e2 / (s1 * s1), "stable rank");
    let h: f64 = sig
        .iter()
        .filter(|x| **x > 0.0)
        .map(|x| -(x / sum) * (x / sum).ln())
        .sum();
    close(got.effective_rank, h.exp(), "effective rank");
    let nrank = sig.iter().filter(|x| **x > RANK_TOL * s1).count();
    assert_eq!(got.numerical_rank, nrank);
    let energy = |q: f64| {
        let mut acc = 0.0;
        1 + sig
            .iter()
            .position(|x| {
                acc += x * x;
                acc >= q * e2 * (1.0 - 1e-12)
            })
            .expect("reached")
    };
    assert_eq!(got.energy_rank_90, energy(0.9));
    assert_eq!(got.energy_rank_99, energy(0.99));
}

#[test]
fn ranks_above_the_dims_match_a_dense_reference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // (out, in, r): r > in, r > out, r > both, and r far above both.
    let shapes = [(7, 3, 5), (3, 7, 5), (4, 5, 9), (2, 3, 300)];
    let write = |name: &str, seed: u64| {
        let mut tensors = vec![];
        for (i, (out, inn, r)) in shapes.iter().enumerate() {
            tensors.extend(pair(
                &format!("{Q}.{i}.self_attn.q_proj"),
                *out,
                *inn,
                *r,
                seed + 10 * i as u64,
            ));
        }
        load(&write_dir(
            tmp.path(),
            name,
            &tensors,
            Some(r#"{"r": 5, "lora_alpha": 3}"#),
        ))
    };
    let (a, b) = (write("a", 1), write("b", 77));
    let st = stats::compute(&a, &Filter::default(), &Control::default()).expect("stats");
    assert_eq!(st.deltas.len(), shapes.len());
    for (i, d) in st.deltas.iter().enumerate() {
        assert_eq!(d.rank, shapes[i].2);
        check_against_dense(d, &dense(&a, i));
    }
    // Compare: cosine and subspace similarity against the dense matrices too.
    let c = compare::compare(&a, &b, &Control::default()).expect("compare");
    assert_eq!(c.pairs.len(), shapes.len());
    for (i, p) in c.pairs.iter().enumerate() {
        let (x, y) = (dense(&a, i), dense(&b, i));
        let dot: f64 = (0..x.nrows())
            .flat_map(|o| (0..x.ncols()).map(move |j| (o, j)))
            .map(|(o, j)| x[(o, j)] * y[(o, j)])
            .sum();
        let cos = dot / (x.norm_l2() * y.norm_l2());
        assert!((p.cosine.expect("cosine") - cos).abs() < 1e-9, "pair {i}");
        let (ux, uy) = (left_basis(&x), left_basis(&y));
        let m = ux.transpose() * &uy;
        let sim = m.norm_l2().powi(2) / ux.ncols().min(uy.ncols()) as f64;
        let got = p.subspace_similarity.expect("similarity");
        assert!((got - sim).abs() < 1e-8, "pair {i}: {got} vs {sim}");
    }
}

/// Left singular vectors above RANK_TOL·σ₁.
fn left_basis(m: &Mat<f64>) -> Mat<f64> {
    let svd = m.thin_svd().expect("svd");
    let s = svd.S().column_vector();
    let s1 = (0..s.nrows()).map(|i| s[i]).fold(0.0, f64::max);
    let keep: Vec<usize> = (0..s.nrows()).filter(|&i| s[i] > RANK_TOL * s1).collect();
    Mat::from_fn(m.nrows(), keep.len(), |i, j| svd.U()[(i, keep[j])])
}

#[test]
fn a_rank_of_65536_on_2x2_is_cheap_and_an_empty_rank_2_pow_30_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = 65536;
    let big = write_dir(
        tmp.path(),
        "big",
        &pair(&format!("{Q}.0.self_attn.q_proj"), 2, 2, r, 3),
        None,
    );
    let huge = 1usize << 30;
    let empty = write_dir(
        tmp.path(),
        "empty",
        &[
            t(
                &format!("{Q}.0.self_attn.q_proj.lora_A.weight"),
                &[huge, 0],
                None,
            ),
            t(
                &format!("{Q}.0.self_attn.q_proj.lora_B.weight"),
                &[0, huge],
                None,
            ),
        ],
        None,
    );
    let run = |dir: &Path| {
        lorascope_limited(
            &["stats", dir.to_str().expect("utf-8"), "--json"],
            tmp.path(),
            &[],
            LIMIT_KIB,
        )
    };
    let st = json(&run(&big));
    let d = &st["deltas"][0];
    assert_eq!(d["rank"], r);
    let sv = d["singular_values"].as_array().expect("σ");
    assert_eq!(sv.len(), r);
    assert!(sv[1].as_f64().expect("σ2") > 0.0 && sv[2] == 0.0);
    // σ of the 2×2 product, densely: fro² = σ1² + σ2².
    let a = load(&big);
    let m = dense(&a, 0);
    let fro = m.norm_l2();
    assert!((d["fro_norm"].as_f64().expect("fro") - fro).abs() < 1e-9 * fro);

    let out = run(&empty);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zero dimension"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

// ---------------------------------------------------------------------------------------------
// 11. thousands of rank/alpha pattern keys

/// Pattern compilations are counted process-wide: the tests that count them take turns.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counting() -> std::sync::MutexGuard<'static, ()> {
    COUNTING.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn thousands_of_pattern_keys_compile_once_and_first_match_wins() {
    let _turn = counting();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = Spec::new(Dims::TOY, Pattern::Attention);
    s.attn_rank = 2;
    s.alpha = 8.0;
    // 5000 keys: most match nothing; a broad key comes before a narrower one for layer 1's
    // q_proj (PEFT takes the first that matches), and one regex key covers every v_proj.
    let mut keys: Vec<(String, f64)> = (0..4996)
        .map(|i| {
            (
                format!("model\\.layers\\.{i}\\.self_attn\\.nothing_{i}"),
                1.0,
            )
        })
        .collect();
    keys.insert(1000, ("layers\\.1\\.self_attn\\.q_proj".into(), 3.0));
    keys.insert(2000, ("model.layers.1.self_attn.q_proj".into(), 5.0));
    keys.insert(3000, ("k_proj".into(), 6.0));
    keys.insert(4000, ("layers\\.[02]\\.self_attn\\.v_proj".into(), 7.0));
    assert_eq!(keys.len(), 5000);
    s.alpha_pattern = keys.clone();
    synth::write_adapter(tmp.path(), &s).expect("write");
    let before = config::regex_compilations();
    let a = load(tmp.path());
    let compiled = config::regex_compilations() - before;
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    // Once per regex key (plain keys need none; other tests in this binary may compile a few
    // patterns meanwhile).
    assert!(
        (4998..4998 + 500).contains(&compiled),
        "{compiled} compilations for 4998 regex keys"
    );
    for d in &a.deltas {
        let want_alpha = match (d.layer, d.target.as_str()) {
            (Some(1), "q_proj") => 3.0,
            (_, "k_proj") => 6.0,
            (Some(0 | 2), "v_proj") => 7.0,
            _ => 8.0,
        };
        assert_eq!(
            d.scale,
            want_alpha / d.rank as f64,
            "{:?} {}",
            d.layer,
            d.target
        );
    }
}

// ---------------------------------------------------------------------------------------------
// issue 22, 11 and 12: costly pattern keys compile once per adapter, within one budget per config

/// A 24-layer attention adapter whose config gets `edit`.
fn adapter_with_config(root: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let dims = Dims {
        layers: 24,
        ..Dims::TOY
    };
    synth::write_adapter(root, &Spec::new(dims, Pattern::Attention)).expect("write");
    let path = root.join("adapter_config.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("config");
    root.to_path_buf()
}

#[test]
fn target_modules_compile_once_per_adapter_not_once_per_module() {
    let _turn = counting();
    let tmp = tempfile::tempdir().expect("tempdir");
    // A regex entry that matches nothing, listed first: the coverage checks try it on every
    // module and on every delta (they used to compile it for each: ~190 compilations here).
    let dir = adapter_with_config(tmp.path(), |c| {
        c["target_modules"] =
            serde_json::json!(["(zz){1,2}", "q_proj", "k_proj", "v_proj", "o_proj"]);
    });
    let before = config::regex_compilations();
    let a = load(&dir);
    let health = lorascope::health::analyze(&a, &[], &[]);
    let compiled = config::regex_compilations() - before;
    assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
    assert!(a.deltas.len() >= 96, "{} deltas", a.deltas.len());
    assert!(compiled < 10, "{compiled} compilations for one regex entry");
    // The check itself is unchanged: the entry that matches nothing is named.
    assert!(
        health.findings.iter().any(|f| f
            .message
            .contains("target_modules entry '(zz){1,2}' matched no tensor")),
        "{:?}",
        health.findings
    );
}

#[test]
fn heavy_pattern_keys_trip_the_compile_budget_and_the_config_is_not_understood() {
    let _turn = counting();
    let tmp = tempfile::tempdir().expect("tempdir");
    // 400 distinct keys of nested counted repetitions, each ~0.7 MiB compiled (under the limit
    // of one key): together far past the budget of one config. They used to be compiled all.
    let keys: serde_json::Map<String, Value> = (0..400)
        .map(|i| {
            (
                format!("(((a{{1,9}}){{1,9}}){{1,9}}){{1,9}}_{i}"),
                2.0.into(),
            )
        })
        .collect();
    let many = adapter_with_config(&tmp.path().join("many"), |c| {
        c["alpha_pattern"] = Value::Object(keys);
    });
    // One key of 22 characters that compiles to ~9 MiB: past the limit of one key.
    let heavy = adapter_with_config(&tmp.path().join("heavy"), |c| {
        c["target_modules"] = serde_json::json!(["((a{1,9}){1,99}){1,99}", "q_proj"]);
    });
    let before = config::regex_compilations();
    let (many, heavy) = support::within(120, "loading costly configs", move || {
        let many = load(&many);
        let heavy = load(&heavy);
        let health = lorascope::health::analyze(&heavy, &[], &[]);
        (many, (heavy, health))
    });
    let compiled = config::regex_compilations() - before;
    assert!(
        (2..100).contains(&compiled),
        "{compiled} compilations: the budget stops well before 400 keys"
    );
    let note = |a: &Adapter, what: &str| {
        assert_eq!(a.kind, Kind::Lora, "{:?}", a.error);
        assert!(a.config.config().is_none(), "the config is not used");
        let n = a
            .notes
            .iter()
            .find(|n| n.contains("adapter_config.json"))
            .unwrap_or_else(|| panic!("no config note in {:?}", a.notes));
        assert!(n.contains(what) && n.contains("scale unknown"), "{n}");
        assert!(n.len() < 400, "a short note: {n}");
    };
    note(&many, "MiB compiled, the budget of one config");
    note(&many, "alpha_pattern key ");
    note(
        &heavy.0,
        "target_modules key 1 of 2 ('((a{1,9}){1,99}){1,99}') compiles to more than 1 MiB",
    );
    // Scales fall back to s = 1, as for any config lorascope cannot use.
    assert!(many.deltas.iter().all(|d| d.scale == 1.0));
}

// ---------------------------------------------------------------------------------------------
// issue 22, 15: a base index that names one shard under thousands of spellings

#[test]
fn a_base_index_naming_one_shard_many_ways_opens_it_once_and_keeps_its_note_short() {
    use lorascope::synth::base::{write_base, BaseSpec, ExpertStorage};
    use lorascope::synth::Item;
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = tmp.path().join("hub");
    let dims = Dims::TOY_MXFP4;
    let mut spec = Spec::new(dims, Pattern::PeftExperts { layers: vec![0, 1] });
    spec.expert_rank = 2;
    let item = Item::Adapter {
        sub: String::new(),
        spec,
    };
    synth::write_hub_repo(&hub, "me/moe", &[item]).expect("adapter");
    write_base(
        &hub,
        "openai/gpt-oss-20b",
        &BaseSpec::new(dims, ExpertStorage::Mxfp4),
    )
    .expect("base");
    let repo = hub.join("models--openai--gpt-oss-20b");
    let rev = std::fs::read_to_string(repo.join("refs/main")).expect("ref");
    let index_path = repo
        .join("snapshots")
        .join(rev.trim())
        .join("model.safetensors.index.json");
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index")).expect("json");
    let map = index["weight_map"].as_object_mut().expect("weight_map");
    let first = map
        .values()
        .next()
        .and_then(Value::as_str)
        .expect("a shard")
        .to_string();
    // The first shard's own tensors under `./NAME`; 10,000 names of it spelt with `./` and
    // `.//` (one file, 10,001 spellings); 3,000 spellings through `x/..` (not files of the
    // snapshot: each one an unreadable shard).
    for v in map.values_mut() {
        if v.as_str() == Some(first.as_str()) {
            *v = format!("./{first}").into();
        }
    }
    for i in 0..10_000usize {
        let dots: String = (0..14)
            .map(|b| if i >> b & 1 == 1 { "./" } else { ".//" })
            .collect();
        map.insert(format!("extra.{i}"), format!("{dots}{first}").into());
    }
    for i in 0..3_000 {
        map.insert(format!("outside.{i}"), format!("x{i}/../{first}").into());
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("index");
    let hub_s = hub.to_str().expect("utf-8");

    let out = support::lorascope(
        &["stats", "me/moe", "--cache", hub_s, "--base", "--json"],
        tmp.path(),
        &[],
    );
    let v = json(&out);
    assert_eq!(v["base"]["found"], true, "{}", v["base"]);
    // The shard opened once serves the tensors placed under any of its spellings: layer 0's
    // deltas (in the first shard) have their numbers.
    let in_first = v["deltas"]
        .as_array()
        .expect("deltas")
        .iter()
        .filter(|d| d["layer"] == 0)
        .collect::<Vec<_>>();
    assert!(!in_first.is_empty());
    for d in in_first {
        assert!(d["relative_change"].is_number(), "{d}");
    }
    let notes = v["base"]["notes"].as_array().expect("notes");
    let note = notes
        .iter()
        .filter_map(Value::as_str)
        .find(|n| n.contains("is partial"))
        .unwrap_or_else(|| panic!("no note of the unreadable spellings in {notes:?}"));
    assert!(note.contains("3000 of"), "{note}");
    assert!(note.contains("and 2992 more"), "{note}");
    assert!(note.len() < 1000, "{} bytes: {note}", note.len());
    // The table too: the adapter's statistics, exit 0.
    let out = support::lorascope(
        &["stats", "me/moe", "--cache", hub_s, "--base"],
        tmp.path(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// smaller: kohya `.alpha` must be one scalar

#[test]
fn a_kohya_alpha_that_is_not_a_scalar_is_an_error_not_a_neighbours_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = "lora_unet_down_blocks_0_attn1_to_q";
    let tensors = |alpha_shape: &[usize]| {
        let n: usize = alpha_shape.iter().product();
        vec![
            t(&format!("{m}.alpha"), alpha_shape, Some(vec![4.0; n])),
            t(
                &format!("{m}.lora_down.weight"),
                &[2, 5],
                Some(values(10, 1)),
            ),
            t(&format!("{m}.lora_up.weight"), &[6, 2], Some(values(12, 2))),
        ]
    };
    let ok = load(&write_dir(tmp.path(), "ok", &tensors(&[]), None));
    assert_eq!(ok.kind, Kind::Lora, "{:?}", ok.error);
    assert_eq!(ok.deltas[0].scale, 2.0, "alpha 4 / r 2");
    for (name, shape) in [("empty", vec![0]), ("vector", vec![3])] {
        let a = load(&write_dir(tmp.path(), name, &tensors(&shape), None));
        assert_eq!(a.kind, Kind::Error, "{name}");
        let e = a.error.expect("message");
        assert!(
            e.contains(&format!("alpha has shape {shape:?}")) && e.contains("expected one scalar"),
            "{name}: {e}"
        );
    }
}

#[test]
fn a_tensor_named_twice_in_a_header_is_an_error() {
    let json = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let e =
        lorascope::adapter::format::parse_header(Path::new("x"), json, 8 + json.len() as u64 + 8)
            .expect_err("duplicate names");
    assert!(e.to_string().contains("tensor 'w' appears twice"), "{e}");
}
