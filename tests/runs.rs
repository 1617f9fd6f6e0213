//! Training runs (issue 26): synthetic runs in the three naming schemes give exactly the planted
//! steps and values (checked against dense f64 references at toy sizes), unreadable checkpoints
//! stay in their run, a folder of two adapters is no run, and the statistics cache is reused,
//! and ignored when hostile.

mod support;

use faer::Mat;
use lorascope::adapter::discovery;
use lorascope::adapter::layout::LayoutOptions;
use lorascope::adapter::Adapter;
use lorascope::compute::stats::{Control, Filter};
use lorascope::run::cache::Cache;
use lorascope::run::timeline::{self, Timeline};
use lorascope::run::{self, Loaded};
use lorascope::synth::run::{write_run, LogEntry, Naming, RunSpec, Select};
use lorascope::synth::{self, Dims, Generated, Pattern, Spec};
use std::path::Path;
use support::read_factor;

fn load(root: &Path) -> Vec<Loaded> {
    run::load(&discovery::discover_path(root), LayoutOptions::default())
}

fn compute(l: Loaded, cache: Option<Cache>) -> Timeline {
    timeline::compute(l, &Filter::default(), cache, &Control::default()).unwrap()
}

/// ΔW = s·B·A of a delta, dense, read straight from the file.
fn dense(a: &Adapter, k: usize) -> Mat<f64> {
    let d = &a.deltas[k];
    let (ra, ca, va) = read_factor(a, d.a);
    let (rb, cb, vb) = read_factor(a, d.b);
    let am = Mat::from_fn(ra, ca, |i, j| va[i * ca + j]);
    let bm = Mat::from_fn(rb, cb, |i, j| vb[i * cb + j]);
    let w = &bm * &am;
    Mat::from_fn(w.nrows(), w.ncols(), |i, j| w[(i, j)] * d.scale)
}

/// (σ descending, U with columns in that order) of a dense matrix.
fn svd(w: &Mat<f64>) -> (Vec<f64>, Mat<f64>) {
    let s = w.thin_svd().unwrap();
    let sv = s.S().column_vector();
    let mut idx: Vec<usize> = (0..sv.nrows()).collect();
    idx.sort_by(|&a, &b| sv[b].total_cmp(&sv[a]));
    let u = s.U();
    (
        idx.iter().map(|&i| sv[i]).collect(),
        Mat::from_fn(u.nrows(), idx.len(), |i, j| u[(i, idx[j])]),
    )
}

fn e99(s: &[f64]) -> usize {
    let total: f64 = s.iter().map(|x| x * x).sum();
    if total == 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    for (i, x) in s.iter().enumerate() {
        acc += x * x;
        if acc >= 0.99 * total * (1.0 - 1e-12) {
            return i + 1;
        }
    }
    s.len()
}

fn erank(s: &[f64]) -> f64 {
    let sum: f64 = s.iter().sum();
    if sum <= 0.0 {
        return 0.0;
    }
    let h: f64 = s
        .iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| -(x / sum) * (x / sum).ln())
        .sum();
    h.exp()
}

/// ‖U_aᵀU_b‖_F² / k over the top k = min(e99_a, e99_b) columns.
fn sim(a: &(Vec<f64>, Mat<f64>), b: &(Vec<f64>, Mat<f64>)) -> Option<f64> {
    let k = e99(&a.0).min(e99(&b.0));
    if k == 0 {
        return None;
    }
    let x = a.1.as_ref().subcols(0, k).transpose() * b.1.as_ref().subcols(0, k);
    let mut f = 0.0;
    for i in 0..k {
        for j in 0..k {
            f += x[(i, j)] * x[(i, j)];
        }
    }
    Some(f / k as f64)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-30) || (a - b).abs() < 1e-14
}

/// Every number of the timeline against the dense reference of every checkpoint, and the planted
/// spectra (growth included) against ‖ΔW‖_F.
fn check_against_dense(l: &Loaded, tl: &Timeline, planted: &[Generated]) {
    let refs: Vec<Vec<(Vec<f64>, Mat<f64>)>> = l
        .adapters
        .iter()
        .map(|a| (0..a.deltas.len()).map(|k| svd(&dense(a, k))).collect())
        .collect();
    let last = refs.len() - 1;
    let a0 = &l.adapters[0];
    assert_eq!(tl.deltas.len(), a0.deltas.len());
    for (k, d) in tl.deltas.iter().enumerate() {
        assert_eq!(
            (d.layer, &d.target, d.expert),
            (
                a0.deltas[k].layer,
                &a0.deltas[k].target,
                a0.deltas[k].expert
            )
        );
        for (i, s) in d.steps.iter().enumerate() {
            let (sig, _) = &refs[i][k];
            let fro = sig.iter().map(|x| x * x).sum::<f64>().sqrt();
            let at = format!("{} {:?} {:?} step {}", d.target, d.layer, d.expert, s.step);
            assert!(
                close(s.fro_norm.unwrap(), fro, 1e-9),
                "fro {at}: {s:?} vs {fro}"
            );
            assert!(close(s.spectral_norm.unwrap(), sig[0], 1e-9), "σ₁ {at}");
            // The dense SVD has min(out, in) values, the factored one r: compare their ranks' worth.
            assert!(
                close(s.effective_rank.unwrap(), erank(sig), 1e-6),
                "erank {at}"
            );
            assert_eq!(s.energy_rank_99.unwrap(), e99(sig), "e99 {at}");
            // Planted: |s|·growth·σ of the synthetic spectrum.
            let p = planted[i]
                .planted
                .iter()
                .find(|p| {
                    Some(p.layer) == d.layer
                        && d.target == p.target.as_str()
                        && p.expert == d.expert
                })
                .expect("planted");
            let scale = l.adapters[i].deltas[k].scale.abs();
            let pf = scale * p.sigma.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                close(s.fro_norm.unwrap(), pf, 1e-6),
                "planted fro {at}: {} vs {pf}",
                s.fro_norm.unwrap()
            );
            let want_prev = if i == 0 {
                None
            } else {
                sim(&refs[i][k], &refs[i - 1][k])
            };
            let want_last = sim(&refs[i][k], &refs[last][k]);
            for (got, want, what) in [
                (s.similarity_prev, want_prev, "prev"),
                (s.similarity_last, want_last, "last"),
            ] {
                match (got, want) {
                    (None, None) => {}
                    (Some(g), Some(w)) => {
                        assert!((g - w).abs() < 1e-5, "similarity {what} {at}: {g} vs {w}")
                    }
                    other => panic!("similarity {what} {at}: {other:?}"),
                }
            }
        }
    }
}

fn expert(layer: usize, target: &'static str, e: usize) -> Select {
    Select {
        layer: Some(layer),
        target: Some(target),
        expert: Some(e),
    }
}

/// A run of `spec` with expert 1 of layer `l` waking at the third step, expert 2 frozen, an
/// attention delta waking at the second; distinct directions at every step.
fn planted_run(spec: Spec, naming: Naming, l: usize, target: &'static str) -> RunSpec {
    let mut r = RunSpec::new(spec, vec![100, 200, 300, 400], naming);
    r.wake.push((expert(l, target, 1), 300));
    r.frozen.push(expert(l, target, 2));
    r.wake.push((
        Select {
            layer: Some(0),
            target: Some("q_proj"),
            expert: None,
        },
        200,
    ));
    r.reseed = true;
    r.name = "toy".into();
    r
}

fn check_planted(root: &Path, r: &RunSpec, l: usize, target: &str, planted: &[Generated]) {
    let runs = load(root);
    assert_eq!(runs.len(), 1, "one run in {}", root.display());
    let run = runs[0].clone();
    assert_eq!(
        run.run.members.iter().map(|m| m.step).collect::<Vec<_>>(),
        r.steps
    );
    assert_eq!(
        run.run.scheme.as_str(),
        match r.naming {
            Naming::Trainer => "trainer",
            Naming::Mlx => "mlx",
            Naming::Kohya => "kohya",
        }
    );
    let tl = compute(run.clone(), None);
    assert_eq!(
        tl.checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(),
        r.steps
    );
    assert!(tl.checkpoints.iter().all(|c| c.error.is_none()));
    check_against_dense(&run, &tl, planted);
    let g = |layer: Option<usize>, t: &str, e: Option<usize>| {
        tl.groups
            .iter()
            .find(|g| g.layer == layer && g.target == t && g.expert == e)
            .unwrap_or_else(|| panic!("group {layer:?} {t} {e:?}"))
    };
    assert_eq!(g(Some(l), target, Some(1)).woke_at, Some(300));
    assert!(!g(Some(l), target, Some(1)).never_moved);
    assert!(g(Some(l), target, Some(2)).never_moved);
    assert_eq!(g(Some(l), target, Some(2)).woke_at, None);
    assert_eq!(g(Some(0), "q_proj", None).woke_at, Some(200));
    assert_eq!(g(Some(l), target, Some(0)).woke_at, Some(100));
    // σ grows as √((i+1)/4): the last step adds 1 − √¾ ≈ 13 % > 5 %.
    assert!(g(Some(l), target, Some(0)).still_growing);
    assert!(!g(Some(l), target, Some(2)).still_growing);
    // The last entry logged at or before the step.
    let logged = |s: u64| {
        r.log
            .iter()
            .filter(|e| e.step <= s)
            .max_by_key(|e| e.step)
            .copied()
    };
    for c in &tl.checkpoints {
        match r.naming {
            Naming::Trainer => {
                let e: LogEntry = logged(c.step).expect("logged at every checkpoint");
                assert_eq!(
                    (c.loss, c.learning_rate, c.grad_norm),
                    (Some(e.loss), Some(e.learning_rate), Some(e.grad_norm))
                );
            }
            _ => assert_eq!((c.loss, c.learning_rate), (None, None)),
        }
    }
}

fn write(root: &Path, r: &RunSpec) -> Vec<Generated> {
    write_run(root, r).unwrap()
}

#[test]
fn trainer_runs_give_the_planted_steps_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1, 2] });
    let r = planted_run(spec, Naming::Trainer, 1, "gate_up_proj");
    let g = write(tmp.path(), &r);
    check_planted(tmp.path(), &r, 1, "gate_up_proj", &g);
}

#[test]
fn mlx_runs_give_the_planted_steps_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::Mlx { layers: 2 });
    let r = planted_run(spec, Naming::Mlx, 2, "down_proj");
    // mlx-lm's layers are the last two: layer 0 has no q_proj; wake layer 1's instead.
    let mut r = r;
    r.wake[1].0.layer = Some(1);
    let g = write(tmp.path(), &r);
    let runs = load(tmp.path());
    assert_eq!(runs.len(), 1);
    let tl = compute(runs[0].clone(), None);
    check_against_dense(&runs[0], &tl, &g);
    let woke = tl
        .groups
        .iter()
        .find(|g| g.layer == Some(1) && g.target == "q_proj")
        .unwrap();
    assert_eq!(woke.woke_at, Some(200));
    let e1 = tl
        .groups
        .iter()
        .find(|g| g.layer == Some(2) && g.target == "down_proj" && g.expert == Some(1))
        .unwrap();
    assert_eq!(e1.woke_at, Some(300));
    let e2 = tl
        .groups
        .iter()
        .find(|g| g.layer == Some(2) && g.target == "down_proj" && g.expert == Some(2))
        .unwrap();
    assert!(e2.never_moved);
    assert!(tl.checkpoints.iter().all(|c| c.loss.is_none()));
    // The latest copy beside the checkpoints is an adapter of its own, not a checkpoint.
    let all = discovery::load_all(
        &discovery::discover_path(tmp.path()),
        LayoutOptions::default(),
    );
    assert_eq!(all.len(), 5);
    assert!(all.iter().any(|a| a.id.ends_with("/adapters.safetensors")));
}

#[test]
fn kohya_runs_give_the_planted_steps_and_values() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(Dims::TOY, Pattern::UnslothExperts { layers: vec![2] });
    spec.expert_rank = 3;
    let mut r = planted_run(spec, Naming::Kohya, 2, "down_proj");
    r.steps = vec![1, 2, 3, 4];
    r.wake = vec![
        (expert(2, "down_proj", 1), 3),
        (
            Select {
                layer: Some(0),
                target: Some("q_proj"),
                expert: None,
            },
            2,
        ),
    ];
    let g = write(tmp.path(), &r);
    let runs = load(tmp.path());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run.scheme.as_str(), "kohya");
    let tl = compute(runs[0].clone(), None);
    check_against_dense(&runs[0], &tl, &g);
    let grp = |l, t: &str, e| {
        tl.groups
            .iter()
            .find(|g| g.layer == Some(l) && g.target == t && g.expert == e)
            .unwrap()
    };
    assert_eq!(grp(2, "down_proj", Some(1)).woke_at, Some(3));
    assert_eq!(grp(0, "q_proj", None).woke_at, Some(2));
    assert!(grp(2, "down_proj", Some(2)).never_moved);
}

#[test]
fn the_same_directions_are_similar_one() {
    // Without reseeding, every checkpoint has the planted directions: similarity 1 exactly
    // (to f32 rounding of the kept bases) wherever a delta is non-zero.
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::Attention);
    let r = RunSpec::new(spec, vec![10, 20, 30], Naming::Trainer);
    write(tmp.path(), &r);
    let tl = compute(load(tmp.path()).remove(0), None);
    for d in &tl.deltas {
        for s in &d.steps {
            assert!((s.similarity_last.unwrap() - 1.0).abs() < 1e-5, "{d:?}");
            if s.step > 10 {
                assert!((s.similarity_prev.unwrap() - 1.0).abs() < 1e-5);
            } else {
                assert_eq!(s.similarity_prev, None);
            }
        }
    }
}

#[test]
fn unreadable_checkpoints_stay_in_the_run_and_the_timeline_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::Attention);
    let r = RunSpec::new(spec, vec![10, 20, 30, 40, 50], Naming::Trainer);
    write(tmp.path(), &r);
    // checkpoint-20: a corrupt header; checkpoint-30: its safetensors missing.
    std::fs::write(
        tmp.path().join("checkpoint-20/adapter_model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    std::fs::remove_file(tmp.path().join("checkpoint-30/adapter_model.safetensors")).unwrap();
    let runs = load(tmp.path());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run.members.len(), 5);
    let tl = compute(runs[0].clone(), None);
    let errs: Vec<bool> = tl.checkpoints.iter().map(|c| c.error.is_some()).collect();
    assert_eq!(errs, vec![false, true, true, false, false]);
    let d = &tl.deltas[0];
    assert!(d.steps[1].fro_norm.is_none() && d.steps[2].fro_norm.is_none());
    assert!(d.steps[3].fro_norm.is_some());
    // The previous checkpoint of step 40 is step 10, the last one read before it.
    assert!((d.steps[3].similarity_prev.unwrap() - 1.0).abs() < 1e-5);
    assert!(tl.groups.iter().all(|g| !g.never_moved));

    // The scan shows one run row with its 5 checkpoints, 2 unreadable.
    let home = tempfile::tempdir().unwrap();
    let out = support::lorascope_at_home(
        home.path(),
        &["scan", tmp.path().to_str().unwrap(), "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["kind"], "run");
    assert_eq!(rows[0]["checkpoints"], 5);
    assert_eq!(rows[0]["steps"], serde_json::json!([10, 50]));
    assert_eq!(rows[0]["unreadable"], 2);
    let out = support::lorascope_at_home(home.path(), &["scan", tmp.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run: 5 checkpoints, steps 10–50"), "{text}");
    assert!(
        text.contains("checkpoint-30: no safetensors file"),
        "{text}"
    );
}

#[test]
fn a_folder_of_two_adapters_is_no_run() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Spec::new(Dims::TOY, Pattern::Attention);
    let mut b = a.clone();
    b.targets = vec!["q_proj", "v_proj"];
    synth::write_adapter(&tmp.path().join("checkpoint-10"), &a).unwrap();
    synth::write_adapter(&tmp.path().join("checkpoint-20"), &b).unwrap();
    assert!(load(tmp.path()).is_empty());
    let home = tempfile::tempdir().unwrap();
    let out = support::lorascope_at_home(
        home.path(),
        &["scan", tmp.path().to_str().unwrap(), "--json"],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["kind"] == "lora"));
    // Another base model: no run either.
    let mut c = a.clone();
    c.base_model = "openai/gpt-oss-120b".into();
    synth::write_adapter(&tmp.path().join("checkpoint-20"), &c).unwrap();
    assert!(load(tmp.path()).is_empty());
    // One checkpoint alone is an adapter, not a run.
    std::fs::remove_dir_all(tmp.path().join("checkpoint-20")).unwrap();
    assert!(load(tmp.path()).is_empty());
}

#[test]
fn measured_checkpoints_come_from_the_cache_and_hostile_entries_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] });
    let mut r = RunSpec::new(spec, vec![1, 2, 3, 4], Naming::Trainer);
    r.reseed = true;
    write(tmp.path(), &r);
    let cache = || Some(Cache::new(cache_dir.path().to_path_buf()));
    let l = load(tmp.path()).remove(0);
    let cold = compute(l.clone(), cache());
    assert!(cold.checkpoints.iter().all(|c| !c.cached));
    let entries: Vec<_> = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 4);
    let warm = compute(l.clone(), cache());
    assert!(
        warm.checkpoints.iter().all(|c| c.cached),
        "{:?}",
        warm.checkpoints
    );
    assert_eq!(warm, cold_without_flags(&cold, true));
    // Hostile entries: garbage, a valid entry under another name, numbers out of range.
    let mut names: Vec<_> = entries.clone();
    names.sort();
    std::fs::write(&names[0], b"{not json").unwrap();
    std::fs::copy(&names[2], &names[1]).unwrap();
    let text = std::fs::read_to_string(&names[3]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["deltas"][0]["fro_norm"] = serde_json::json!(-1.0);
    std::fs::write(&names[3], serde_json::to_vec(&v).unwrap()).unwrap();
    let again = compute(l.clone(), cache());
    let measured = again.checkpoints.iter().filter(|c| !c.cached).count();
    assert!(measured >= 3, "{:?}", again.checkpoints);
    assert_eq!(
        cold_without_flags(&again, true),
        cold_without_flags(&cold, true)
    );
    // A checkpoint rewritten (new mtime and header) is measured again.
    let r2 = RunSpec {
        growth: vec![0.5, 0.6, 0.7, 0.8],
        ..r.clone()
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(tmp.path(), &r2);
    let l2 = load(tmp.path()).remove(0);
    let fresh = compute(l2, cache());
    assert!(fresh.checkpoints.iter().all(|c| !c.cached));
    assert_ne!(
        cold_without_flags(&fresh, true).deltas,
        cold_without_flags(&cold, true).deltas
    );
}

/// The timeline with its `cached` flags set to `cached` (they say where numbers came from).
fn cold_without_flags(t: &Timeline, cached: bool) -> Timeline {
    let mut t = t.clone();
    t.checkpoints.iter_mut().for_each(|c| c.cached = cached);
    t
}

#[test]
fn timeline_command_prints_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] });
    let r = RunSpec::new(spec, vec![5, 10], Naming::Trainer);
    write(tmp.path(), &r);
    let home = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    let out = support::lorascope_at_home(
        home.path(),
        &["timeline", root, "--json", "--layer", "1", "--expert", "0"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |o: &serde_json::Value| o.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&v),
        ["run", "path", "scheme", "checkpoints", "deltas", "groups"]
    );
    assert_eq!(
        keys(&v["checkpoints"][0]),
        [
            "step",
            "id",
            "path",
            "loss",
            "learning_rate",
            "grad_norm",
            "error"
        ]
    );
    assert_eq!(
        keys(&v["deltas"][0]),
        ["layer", "target", "expert", "steps"]
    );
    assert_eq!(
        keys(&v["deltas"][0]["steps"][0]),
        [
            "step",
            "fro_norm",
            "spectral_norm",
            "effective_rank",
            "energy_rank_99",
            "similarity_prev",
            "similarity_last",
            "dead",
            "finite"
        ]
    );
    assert_eq!(
        keys(&v["groups"][0]),
        [
            "layer",
            "target",
            "expert",
            "woke_at",
            "never_moved",
            "still_growing"
        ]
    );
    // --layer 1 --expert 0: the two expert targets of layer 1.
    assert_eq!(v["deltas"].as_array().unwrap().len(), 2);
    assert!(v["checkpoints"][1]["loss"].is_f64());
    // The statistics went to lorascope's own cache, nowhere else.
    assert!(home.path().join("xdg/lorascope/runs-stats").is_dir());
    let text = support::lorascope_at_home(home.path(), &["timeline", root]);
    assert!(text.status.success());
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(s.contains("2 checkpoints, steps 5–10"), "{s}");
    assert!(s.contains("layer 1 gate_up_proj expert 0"), "{s}");
    let bad = support::lorascope_at_home(home.path(), &["timeline", home.path().to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no training run"));
}

/// Writes checkpoint `i` of `r` as revision `rev(i)` of `id` in `hub`, with a trainer state
/// (global_step) when `state`.
fn commit_revision(hub: &support::Hub, id: &str, r: &RunSpec, i: usize, state: bool) -> Generated {
    let stage = hub.stage();
    let g = synth::write_adapter(&stage, &r.checkpoint_spec(i)).unwrap();
    if state {
        let last = *r.steps.last().unwrap();
        let s = lorascope::synth::run::trainer_state(&r.log, r.steps[i], last);
        std::fs::write(stage.join("trainer_state.json"), s.to_string()).unwrap();
    }
    hub.commit(id, &support::rev(&format!("{id}-{i}")));
    g
}

#[test]
fn fetched_revisions_of_a_hub_repo_are_a_run() {
    let hub = support::Hub::new();
    let spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![1] });
    let r = planted_run(spec, Naming::Trainer, 1, "gate_up_proj");
    let id = "org/run";
    let planted: Vec<Generated> = (0..4)
        .map(|i| commit_revision(&hub, id, &r, i, i >= 2))
        .collect();
    let repo = lorascope::hub::cache::CacheRepo::new(&hub.root, id);
    // Steps of the first two from branch refs (a revision fetched by branch name), of the
    // others from their trainer states.
    for i in 0..2 {
        let name = format!("checkpoint-{}", r.steps[i]);
        repo.set_ref(&name, &support::rev(&format!("{id}-{i}")))
            .unwrap();
    }
    hub.set_ref(id, &support::rev(&format!("{id}-3")));
    // A repo with one revision is no run.
    hub.add("org/single", &Spec::new(Dims::TOY, Pattern::Attention));

    let sources = discovery::discover_cache(&hub.root);
    let ids: Vec<&str> = sources.iter().map(|s| s.id.as_str()).collect();
    let short = |i: usize| support::rev(&format!("{id}-{i}"))[..7].to_string();
    assert_eq!(
        ids,
        vec![
            "org/run".to_string(),
            format!("org/run@{}", short(0)),
            format!("org/run@{}", short(1)),
            format!("org/run@{}", short(2)),
            "org/single".to_string(),
        ]
    );
    let runs = run::load(&sources, LayoutOptions::default());
    assert_eq!(runs.len(), 1);
    let l = &runs[0];
    assert_eq!(l.run.id, "org/run");
    assert_eq!(l.run.scheme.as_str(), "hub");
    assert_eq!(
        l.run.members.iter().map(|m| m.step).collect::<Vec<_>>(),
        r.steps
    );
    let tl = compute(l.clone(), None);
    check_against_dense(l, &tl, &planted);
    let g = tl
        .groups
        .iter()
        .find(|g| g.layer == Some(1) && g.target == "gate_up_proj" && g.expert == Some(1))
        .unwrap();
    assert_eq!(g.woke_at, Some(300));

    // Without steps in refs or states, the fetch order gives the steps, and the scheme says so.
    let hub2 = support::Hub::new();
    for i in 0..3 {
        commit_revision(&hub2, id, &r, i, false);
        let snap = lorascope::hub::cache::CacheRepo::new(&hub2.root, id)
            .snapshot(&support::rev(&format!("{id}-{i}")));
        let t =
            std::time::SystemTime::now() - std::time::Duration::from_secs(3600 * (3 - i as u64));
        std::fs::File::open(&snap).unwrap().set_modified(t).unwrap();
    }
    hub2.set_ref(id, &support::rev(&format!("{id}-2")));
    let runs = run::load(
        &discovery::discover_cache(&hub2.root),
        LayoutOptions::default(),
    );
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run.scheme.as_str(), "hub-fetch-order");
    let order: Vec<(u64, String)> = runs[0]
        .run
        .members
        .iter()
        .zip(&runs[0].adapters)
        .map(|(m, a)| (m.step, a.revision.clone().unwrap()))
        .collect();
    let want: Vec<(u64, String)> = (0..3)
        .map(|i| (i as u64 + 1, support::rev(&format!("{id}-{i}"))))
        .collect();
    assert_eq!(order, want);
}

#[test]
fn an_older_revision_of_another_adapter_is_listed_not_a_run() {
    let hub = support::Hub::new();
    let id = "org/changed";
    let stage = hub.stage();
    synth::write_adapter(&stage, &Spec::new(Dims::TOY, Pattern::Attention)).unwrap();
    hub.commit(id, &support::rev("old"));
    let stage = hub.stage();
    synth::write_adapter(
        &stage,
        &Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![0] }),
    )
    .unwrap();
    hub.commit(id, &support::rev("new"));
    hub.set_ref(id, &support::rev("new"));
    let sources = discovery::discover_cache(&hub.root);
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].id, id);
    assert_eq!(
        sources[0].revision.as_deref(),
        Some(support::rev("new").as_str())
    );
    assert!(sources[1].id.starts_with("org/changed@"));
    assert!(run::load(&sources, LayoutOptions::default()).is_empty());
}
