//! adapter_config.json: PEFT's (and Tinker's) fields that decide ranks and scales.

use regex::Regex;
use serde_json::Value;
use std::path::Path;

/// PEFT's defaults when a config omits the field.
const PEFT_DEFAULT_R: usize = 8;
const PEFT_DEFAULT_ALPHA: f64 = 8.0;

/// The parts of adapter_config.json that lorascope uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// Ordered: PEFT takes the first matching key.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub target_modules: Vec<String>,
    pub target_parameters: Vec<String>,
    pub modules_to_save: Vec<String>,
    pub use_dora: bool,
    pub base_model: Option<String>,
    pub peft_type: Option<String>,
    /// mlx-lm's `lora_parameters.scale`: the scale itself, not alpha (mlx_lm/tuner/utils.py).
    pub mlx_scale: Option<f64>,
    /// Fields that were absent and took PEFT's default, said to the user.
    pub defaulted: Vec<&'static str>,
}

/// What was found where adapter_config.json should be.
#[derive(Debug, Clone, PartialEq)]
// One per adapter, read once: boxing the config would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ConfigStatus {
    Ok(AdapterConfig),
    Missing,
    Malformed(String),
}

impl ConfigStatus {
    pub fn config(&self) -> Option<&AdapterConfig> {
        match self {
            ConfigStatus::Ok(c) => Some(c),
            _ => None,
        }
    }
    /// A note for people when the config could not be used, else None.
    pub fn problem(&self) -> Option<String> {
        match self {
            ConfigStatus::Ok(_) => None,
            ConfigStatus::Missing => {
                Some("no adapter_config.json: ranks from shapes, scale unknown (s = 1)".into())
            }
            ConfigStatus::Malformed(m) => Some(format!(
                "adapter_config.json is malformed ({m}): ranks from shapes, scale unknown (s = 1)"
            )),
        }
    }
}

/// Reads `dir/adapter_config.json`, never failing: problems become the status.
pub fn load(dir: &Path) -> ConfigStatus {
    let path = dir.join("adapter_config.json");
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigStatus::Missing,
        Err(e) => ConfigStatus::Malformed(format!("cannot read it: {e}")),
        Ok(bytes) => match parse(&bytes) {
            Ok(c) => ConfigStatus::Ok(c),
            Err(m) => ConfigStatus::Malformed(m),
        },
    }
}

/// Parses the JSON text of an adapter_config.json.
pub fn parse(bytes: &[u8]) -> Result<AdapterConfig, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let mut c = AdapterConfig::default();
    if let Some(lp) = o.get("lora_parameters") {
        return parse_mlx(o, lp);
    }
    c.r = match o.get("r") {
        Some(x) => x
            .as_u64()
            .filter(|&r| r > 0)
            .ok_or(format!("r is {x}, not a positive integer"))? as usize,
        None => {
            c.defaulted.push("r");
            PEFT_DEFAULT_R
        }
    };
    c.lora_alpha = match o.get("lora_alpha") {
        Some(x) => x
            .as_f64()
            .ok_or(format!("lora_alpha is {x}, not a number"))?,
        None => {
            c.defaulted.push("lora_alpha");
            PEFT_DEFAULT_ALPHA
        }
    };
    c.use_rslora = o
        .get("use_rslora")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    c.use_dora = o.get("use_dora").and_then(Value::as_bool).unwrap_or(false);
    c.rank_pattern = pattern(o.get("rank_pattern"), "rank_pattern", |x| {
        x.as_u64().filter(|&r| r > 0).map(|r| r as usize)
    })?;
    c.alpha_pattern = pattern(o.get("alpha_pattern"), "alpha_pattern", Value::as_f64)?;
    c.target_modules = strings(o.get("target_modules"));
    c.target_parameters = strings(o.get("target_parameters"));
    c.modules_to_save = strings(o.get("modules_to_save"));
    c.base_model = o
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .map(str::to_owned);
    c.peft_type = o
        .get("peft_type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(c)
}

/// mlx-lm's adapter_config.json: `lora_parameters {rank, scale}`, `fine_tune_type`, `model`.
fn parse_mlx(o: &serde_json::Map<String, Value>, lp: &Value) -> Result<AdapterConfig, String> {
    let rank = lp
        .get("rank")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or(format!(
            "lora_parameters.rank is missing or not a positive integer in {lp}"
        ))?;
    let scale = lp.get("scale").and_then(Value::as_f64).ok_or(format!(
        "lora_parameters.scale is missing or not a number in {lp}"
    ))?;
    Ok(AdapterConfig {
        r: rank as usize,
        lora_alpha: scale * rank as f64,
        mlx_scale: Some(scale),
        // `fine_tune_type` is `lora`, `dora` or `full`.
        use_dora: o.get("fine_tune_type").and_then(Value::as_str) == Some("dora"),
        base_model: o.get("model").and_then(Value::as_str).map(str::to_owned),
        ..AdapterConfig::default()
    })
}

fn pattern<T>(
    v: Option<&Value>,
    field: &str,
    get: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<(String, T)>, String> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| {
                get(x)
                    .map(|t| (k.clone(), t))
                    .ok_or(format!("{field}['{k}'] is {x}, not a valid value"))
            })
            .collect(),
        Some(other) => Err(format!("{field} is {other}, not an object")),
    }
}

/// A string or a list of strings (PEFT allows both for target_modules).
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// PEFT's rule: key K matches module path M when `(.*\.)?(K)$` matches M from its start.
pub fn pattern_matches(key: &str, module: &str) -> bool {
    // Compiled regexes are kept per thread: compiling one per call (48 target_parameters × 48
    // expert modules per adapter) was 90 % of a scan of the survey's 140 repos.
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<Regex>>> =
            Default::default();
    }
    COMPILED.with_borrow_mut(|cache| {
        if cache.len() > 4096 {
            cache.clear();
        }
        let re = cache
            .entry(key.to_string())
            .or_insert_with(|| Regex::new(&format!(r"^(.*\.)?({key})$")).ok());
        match re {
            Some(re) => re.is_match(module),
            // A key that is not a valid regex can still match literally.
            None => module == key || module.ends_with(&format!(".{key}")),
        }
    })
}

impl AdapterConfig {
    fn lookup<T: Copy>(pats: &[(String, T)], module: &str) -> Option<T> {
        pats.iter()
            .find(|(k, _)| pattern_matches(k, module))
            .map(|(_, v)| *v)
    }

    /// Rank r for a module path (without `base_model.model.`): rank_pattern, else `r`.
    pub fn rank_for(&self, module: &str) -> usize {
        Self::lookup(&self.rank_pattern, module).unwrap_or(self.r)
    }

    /// Scale s for a module of rank `r`: alpha/r, or alpha/sqrt(r) with rsLoRA; mlx-lm's own scale.
    pub fn scale_for(&self, module: &str, r: usize) -> f64 {
        if let Some(s) = self.mlx_scale {
            return s;
        }
        let alpha = Self::lookup(&self.alpha_pattern, module).unwrap_or(self.lora_alpha);
        scale(alpha, r, self.use_rslora)
    }
}

/// The LoRA scale from alpha and r.
pub fn scale(alpha: f64, r: usize, rslora: bool) -> f64 {
    if r == 0 {
        return 0.0;
    }
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}
