//! The trainer's log of a run: `trainer_state.json`'s `log_history` (Transformers
//! `TrainerState.save_to_json`; each training entry `{epoch, grad_norm, learning_rate, loss,
//! step}` from `Trainer._maybe_log_save_evaluate` and `Trainer.log`), read from every checkpoint
//! folder and the run folder. A missing, oversized or malformed file is no log (values null).

use crate::adapter::fsread;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A `trainer_state.json` larger than this is not read (real ones are kilobytes to a few MB).
const MAX_STATE_BYTES: u64 = 64 << 20;

/// What was logged at one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Logged {
    pub loss: Option<f64>,
    pub learning_rate: Option<f64>,
    pub grad_norm: Option<f64>,
}

/// Logged values by step, from every `trainer_state.json` read.
#[derive(Debug, Clone, Default)]
pub struct Log(BTreeMap<u64, Logged>);

impl Log {
    /// Adds the entries of `dir/trainer_state.json`, if it reads and parses.
    pub fn add_dir(&mut self, dir: &Path) {
        let Ok(bytes) = fsread::read_capped(&dir.join("trainer_state.json"), MAX_STATE_BYTES)
        else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return;
        };
        let Some(history) = v.get("log_history").and_then(Value::as_array) else {
            return;
        };
        for e in history {
            let Some(step) = e.get("step").and_then(Value::as_u64) else {
                continue;
            };
            let num = |k: &str| e.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
            let got = self.0.entry(step).or_default();
            got.loss = got.loss.or(num("loss"));
            got.learning_rate = got.learning_rate.or(num("learning_rate"));
            got.grad_norm = got.grad_norm.or(num("grad_norm"));
        }
    }

    /// The values at `step`: each the last logged at or before it (the Trainer logs every
    /// `logging_steps`, saves every `save_steps`).
    pub fn at(&self, step: u64) -> Logged {
        let mut out = Logged::default();
        for l in self.0.range(..=step).rev().map(|(_, l)| l) {
            out.loss = out.loss.or(l.loss);
            out.learning_rate = out.learning_rate.or(l.learning_rate);
            out.grad_norm = out.grad_norm.or(l.grad_norm);
            if out.loss.is_some() && out.learning_rate.is_some() && out.grad_norm.is_some() {
                break;
            }
        }
        out
    }

    /// The log of a run: `trainer_state.json` of the run folder and of every checkpoint folder.
    pub fn of_run(loaded: &super::Loaded) -> Log {
        let mut log = Log::default();
        log.add_dir(&loaded.run.path);
        for a in &loaded.adapters {
            if a.path.is_dir() {
                log.add_dir(&a.path);
            }
        }
        log
    }

    /// The loss at every step that logged one, ascending (the loss curve).
    pub fn losses(&self) -> Vec<(u64, f64)> {
        self.0
            .iter()
            .filter_map(|(&s, l)| Some((s, l.loss?)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
