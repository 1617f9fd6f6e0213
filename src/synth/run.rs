//! Synthetic training runs: a folder of checkpoints of one adapter with planted singular values per
//! step (a growth factor per checkpoint), deltas that wake up at a chosen step, deltas that never
//! move, and a `trainer_state.json` whose `log_history` holds a planted loss, learning rate and
//! gradient norm per logged step. Written in the three naming schemes `run::detect` reads
//! (docs/runs.md cites the upstream writers): the Transformers Trainer's `checkpoint-<step>/`
//! folders, mlx-lm's `<step:07>_adapters.safetensors` files and kohya's `<name>-<epoch:06>` files.

use super::{generate, write_safetensors, Damage, DamageKind, Generated, Spec};
use std::path::{Path, PathBuf};

/// How the checkpoints of a run are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Transformers Trainer (TRL, Unsloth, axolotl): `checkpoint-<step>/` folders, each with the
    /// adapter, its `adapter_config.json` and `trainer_state.json`.
    Trainer,
    /// mlx-lm: `<step:07>_adapters.safetensors` beside `adapters.safetensors` (the latest) and
    /// one `adapter_config.json`.
    Mlx,
    /// kohya sd-scripts: `<name>-<epoch:06>.safetensors` beside `<name>.safetensors` (the last).
    Kohya,
}

/// Which deltas a rule applies to (`None` = any layer, target or expert).
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub layer: Option<usize>,
    pub target: Option<&'static str>,
    pub expert: Option<usize>,
}

impl Select {
    fn damage(&self, kind: DamageKind) -> Damage {
        Damage::new(self.layer, self.target, self.expert, kind)
    }
}

/// One planted `log_history` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogEntry {
    pub step: u64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
}

/// Everything that decides a synthetic run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The adapter every checkpoint holds (pattern, sizes, ranks, seed).
    pub spec: Spec,
    /// Checkpoint steps (epochs for kohya), ascending.
    pub steps: Vec<u64>,
    pub naming: Naming,
    /// σ of every delta at checkpoint i is `growth[i]` times its planted spectrum.
    pub growth: Vec<f64>,
    /// Deltas that are exactly zero (B = 0) at every checkpoint before the step given.
    pub wake: Vec<(Select, u64)>,
    /// Deltas that are zero at every checkpoint.
    pub frozen: Vec<Select>,
    /// New singular directions at every checkpoint (seed + i) instead of the same ones.
    pub reseed: bool,
    /// The trainer's log (written to `trainer_state.json` for the Trainer naming only).
    pub log: Vec<LogEntry>,
    /// kohya's output name.
    pub name: String,
}

impl RunSpec {
    /// A run of `spec` at `steps`, σ growing as √(i+1)/√n, a log every step/… (see `default_log`).
    pub fn new(spec: Spec, steps: Vec<u64>, naming: Naming) -> RunSpec {
        let n = steps.len().max(1) as f64;
        let growth = (0..steps.len())
            .map(|i| ((i + 1) as f64 / n).sqrt())
            .collect();
        let log = default_log(steps.last().copied().unwrap_or(0));
        RunSpec {
            spec,
            steps,
            naming,
            growth,
            wake: vec![],
            frozen: vec![],
            reseed: false,
            log,
            name: "run".into(),
        }
    }

    /// The adapter of checkpoint `i`: the run's spec with its growth, wake-ups and frozen deltas.
    pub fn checkpoint_spec(&self, i: usize) -> Spec {
        let mut s = self.spec.clone();
        let all = Select {
            layer: None,
            target: None,
            expert: None,
        };
        s.damage.push(all.damage(DamageKind::Scale(self.growth[i])));
        for f in &self.frozen {
            s.damage.push(f.damage(DamageKind::Dead));
        }
        for (w, at) in &self.wake {
            if self.steps[i] < *at {
                s.damage.push(w.damage(DamageKind::Dead));
            }
        }
        if self.reseed {
            s.seed = self.spec.seed.wrapping_add(i as u64);
        }
        s
    }

    /// Where checkpoint `i` is written below `root`: its folder (Trainer) or file (mlx, kohya).
    pub fn checkpoint_path(&self, root: &Path, i: usize) -> PathBuf {
        let step = self.steps[i];
        match self.naming {
            Naming::Trainer => root.join(format!("checkpoint-{step}")),
            Naming::Mlx => root.join(format!("{step:07}_adapters.safetensors")),
            Naming::Kohya => root.join(format!("{}-{step:06}.safetensors", self.name)),
        }
    }
}

/// A log every 10th of the last step (at least every step): loss 2·e^(−3s/S) + 0.5, learning rate
/// decaying linearly from 2·10⁻⁴, gradient norm 1/(1 + s/S).
pub fn default_log(last: u64) -> Vec<LogEntry> {
    let every = (last / 10).max(1);
    let s_max = last.max(1) as f64;
    (1..=last / every)
        .map(|k| k * every)
        .map(|s| {
            let x = s as f64 / s_max;
            LogEntry {
                step: s,
                loss: 2.0 * (-3.0 * x).exp() + 0.5,
                learning_rate: 2e-4 * (1.0 - x) + 1e-6,
                grad_norm: 1.0 / (1.0 + x),
            }
        })
        .collect()
}

/// `trainer_state.json` as the Trainer saves it at `step` (`TrainerState.save_to_json`): the
/// state's fields and `log_history` up to the step, each entry `{epoch, grad_norm,
/// learning_rate, loss, step}` as `Trainer._maybe_log_save_evaluate` and `Trainer.log` make it.
pub fn trainer_state(log: &[LogEntry], step: u64, max_steps: u64) -> serde_json::Value {
    let epoch = |s: u64| s as f64 / max_steps.max(1) as f64;
    let history: Vec<serde_json::Value> = log
        .iter()
        .filter(|e| e.step <= step)
        .map(|e| {
            serde_json::json!({
                "epoch": epoch(e.step),
                "grad_norm": e.grad_norm,
                "learning_rate": e.learning_rate,
                "loss": e.loss,
                "step": e.step,
            })
        })
        .collect();
    serde_json::json!({
        "best_global_step": null,
        "best_metric": null,
        "best_model_checkpoint": null,
        "epoch": epoch(step),
        "eval_steps": 500,
        "global_step": step,
        "is_hyper_param_search": false,
        "is_local_process_zero": true,
        "is_world_process_zero": true,
        "log_history": history,
        "logging_steps": log.first().map_or(1, |e| e.step),
        "max_steps": max_steps,
        "num_input_tokens_seen": 0,
        "num_train_epochs": 1,
        "save_steps": step,
        "total_flos": 0.0,
        "train_batch_size": 1,
        "trial_name": null,
        "trial_params": null,
    })
}

/// Writes the run into `root` (created); returns each checkpoint's generated adapter (its planted
/// spectra are before the growth factor: `checkpoint_spec` folds it into `planted`).
pub fn write_run(root: &Path, run: &RunSpec) -> std::io::Result<Vec<Generated>> {
    std::fs::create_dir_all(root)?;
    let last = run.steps.last().copied().unwrap_or(0);
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    let mut out = Vec::with_capacity(run.steps.len());
    for (i, &step) in run.steps.iter().enumerate() {
        let spec = run.checkpoint_spec(i);
        let g = generate(&spec);
        let at = run.checkpoint_path(root, i);
        match run.naming {
            Naming::Trainer => {
                std::fs::create_dir_all(&at)?;
                write_safetensors(&at.join(spec.pattern.file_name()), &g.tensors, spec.aligned)?;
                std::fs::write(at.join("adapter_config.json"), json(&g.config))?;
                let state = trainer_state(&run.log, step, last);
                std::fs::write(at.join("trainer_state.json"), json(&state))?;
            }
            Naming::Mlx | Naming::Kohya => {
                write_safetensors(&at, &g.tensors, spec.aligned)?;
                if i + 1 == run.steps.len() {
                    let latest = match run.naming {
                        Naming::Mlx => "adapters.safetensors".to_string(),
                        _ => format!("{}.safetensors", run.name),
                    };
                    write_safetensors(&root.join(latest), &g.tensors, spec.aligned)?;
                }
                if run.naming == Naming::Mlx {
                    std::fs::write(root.join("adapter_config.json"), json(&g.config))?;
                }
            }
        }
        out.push(g);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Dims, Pattern};

    #[test]
    fn names_follow_the_three_writers() {
        let spec = Spec::new(Dims::TOY, Pattern::Attention);
        let mut r = RunSpec::new(spec, vec![5, 100], Naming::Trainer);
        let root = Path::new("/r");
        assert_eq!(r.checkpoint_path(root, 1), root.join("checkpoint-100"));
        r.naming = Naming::Mlx;
        assert_eq!(
            r.checkpoint_path(root, 1),
            root.join("0000100_adapters.safetensors")
        );
        r.naming = Naming::Kohya;
        r.name = "mylora".into();
        assert_eq!(
            r.checkpoint_path(root, 0),
            root.join("mylora-000005.safetensors")
        );
    }

    #[test]
    fn growth_wake_and_frozen_are_planted() {
        let spec = Spec::new(Dims::TOY, Pattern::Attention);
        let mut r = RunSpec::new(spec, vec![10, 20, 30], Naming::Trainer);
        let q = Select {
            layer: Some(1),
            target: Some("q_proj"),
            expert: None,
        };
        let k = Select {
            layer: Some(0),
            target: Some("k_proj"),
            expert: None,
        };
        r.wake.push((q, 20));
        r.frozen.push(k);
        let g: Vec<Generated> = (0..3).map(|i| generate(&r.checkpoint_spec(i))).collect();
        let find = |g: &Generated, l: usize, t: &str| {
            g.planted
                .iter()
                .find(|p| p.layer == l && p.target == t)
                .unwrap()
                .sigma
                .clone()
        };
        assert!(find(&g[0], 1, "q_proj").iter().all(|&x| x == 0.0));
        assert!(find(&g[1], 1, "q_proj").iter().all(|&x| x > 0.0));
        assert!(g
            .iter()
            .all(|g| find(g, 0, "k_proj").iter().all(|&x| x == 0.0)));
        let (a, c) = (find(&g[0], 2, "v_proj"), find(&g[2], 2, "v_proj"));
        let ratio = r.growth[2] / r.growth[0];
        assert!(a.iter().zip(&c).all(|(x, y)| (y / x - ratio).abs() < 1e-12));
    }
}
