//! adapter_config.json: PEFT's (and Tinker's) fields that decide ranks and scales.

use regex_automata::meta::Regex;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    pub rank_pattern: Patterns<usize>,
    pub alpha_pattern: Patterns<f64>,
    /// PEFT's list (or one regex string), compiled once: health checks every module against it.
    pub target_modules: Patterns<()>,
    pub target_parameters: Vec<String>,
    /// `target_parameters` split at the last dot: module pattern → parameter, in order.
    pub wrapped_parameters: Patterns<String>,
    pub modules_to_save: Vec<String>,
    pub use_dora: bool,
    /// PEFT's `bias` ("none", "all", "lora_only"): base biases trained and saved with the adapter.
    pub bias: Option<String>,
    /// PEFT's `lora_bias`: a bias on lora_B (`lora_B.bias` tensors).
    pub lora_bias: bool,
    /// `init_lora_weights` when it names an init (`"pissa"`, `"olora"`, `"gaussian"`, …);
    /// None for `true`/`false`.
    pub init_lora_weights: Option<String>,
    pub base_model: Option<String>,
    pub peft_type: Option<String>,
    /// mlx-lm's `lora_parameters.scale`: the scale itself, not alpha (mlx_lm/tuner/utils.py).
    pub mlx_scale: Option<f64>,
    /// Fields that were absent and took PEFT's default, said to the user.
    pub defaulted: Vec<&'static str>,
    /// Of the keys vLLM's and SGLang's loaders index without a default (`r`, `lora_alpha`,
    /// `target_modules`), those the file lacks (all three for mlx-lm's config).
    pub lacks_required: Vec<&'static str>,
}

/// The keys of adapter_config.json that vLLM (`PEFTHelper.from_dict`) and SGLang
/// (`LoRAConfig.__init__`) require.
pub const ENGINE_REQUIRED_KEYS: [&str; 3] = ["r", "lora_alpha", "target_modules"];

/// What was found where adapter_config.json should be.
#[derive(Debug, Clone, PartialEq)]
// One per adapter, never in bulk: boxing the config would buy nothing but indirection.
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
    /// Why an engine that loads adapter_config.json as PEFT writes it (vLLM's `PEFTHelper`,
    /// SGLang's `LoRAConfig`: open, `json.load`, index `r`, `lora_alpha`, `target_modules`,
    /// divide by `r`) fails on this one, else None. lorascope's own limits (a pattern too
    /// costly to compile) are not the engines' and give None.
    pub fn unloadable(&self) -> Option<String> {
        match self {
            ConfigStatus::Missing => Some("there is no adapter_config.json".into()),
            ConfigStatus::Malformed(m)
                if [
                    "cannot read it",
                    "invalid JSON",
                    "not a JSON object",
                    "r is",
                    "lora_alpha is",
                ]
                .iter()
                .any(|p| m.starts_with(p)) =>
            {
                Some(format!("adapter_config.json: {m}"))
            }
            ConfigStatus::Malformed(_) => None,
            ConfigStatus::Ok(c) if !c.lacks_required.is_empty() => Some(format!(
                "adapter_config.json has no {}",
                c.lacks_required.join(", ")
            )),
            ConfigStatus::Ok(_) => None,
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
    match crate::adapter::fsread::read_regular(&path) {
        Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            ConfigStatus::Missing
        }
        Err(crate::Error::Io { source, .. }) => {
            ConfigStatus::Malformed(format!("cannot read it: {source}"))
        }
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
    let lacks_required: Vec<&'static str> = ENGINE_REQUIRED_KEYS
        .into_iter()
        .filter(|k| !o.contains_key(*k))
        .collect();
    if let Some(lp) = o.get("lora_parameters") {
        return parse_mlx(o, lp).map(|c| AdapterConfig {
            lacks_required,
            ..c
        });
    }
    c.lacks_required = lacks_required;
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
    c.bias = o.get("bias").and_then(Value::as_str).map(str::to_owned);
    c.lora_bias = o.get("lora_bias").and_then(Value::as_bool).unwrap_or(false);
    c.init_lora_weights = o
        .get("init_lora_weights")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Every pattern key of the config shares one compile budget.
    let mut budget = Budget::new();
    c.rank_pattern = Patterns::compile(
        "rank_pattern",
        pattern(o.get("rank_pattern"), "rank_pattern", |x| {
            x.as_u64().filter(|&r| r > 0).map(|r| r as usize)
        })?,
        &mut budget,
    )?;
    c.alpha_pattern = Patterns::compile(
        "alpha_pattern",
        pattern(o.get("alpha_pattern"), "alpha_pattern", Value::as_f64)?,
        &mut budget,
    )?;
    c.target_modules = Patterns::compile(
        "target_modules",
        strings(o.get("target_modules"))
            .into_iter()
            .map(|t| (t, ()))
            .collect(),
        &mut budget,
    )?;
    c.target_parameters = strings(o.get("target_parameters"));
    c.wrapped_parameters = Patterns::compile(
        "target_parameters",
        c.target_parameters
            .iter()
            .map(|t| match t.rsplit_once('.') {
                Some((prefix, param)) => (prefix.to_string(), param.to_string()),
                None => (String::new(), t.clone()),
            })
            .collect(),
        &mut budget,
    )?;
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

/// Regexes compiled so far by this process (a diagnostic: patterns compile once per config).
static COMPILATIONS: AtomicUsize = AtomicUsize::new(0);

/// How many pattern regexes this process has compiled.
pub fn regex_compilations() -> usize {
    COMPILATIONS.load(Ordering::Relaxed)
}

/// The most memory one pattern key may compile to (its automata, as `regex_automata` counts
/// them). Keys PEFT users write (module paths, `\d+`, alternations, Unicode `\w`) take 4 to
/// 60 KiB; nested counted repetitions such as `((a{1,50}){1,50}){1,50}` take megabytes, and both
/// compiling and matching them grow with their size.
pub const KEY_SIZE_LIMIT: usize = 1 << 20;

/// The most memory all the pattern keys of one config (`rank_pattern`, `alpha_pattern`,
/// `target_modules`, `target_parameters`) may compile to together. Compile time grows with the
/// bytes built (about 10 ms per MiB optimised), so this also bounds the time one config costs.
/// 5000 small regex keys take about 21 MiB.
pub const CONFIG_COMPILE_BUDGET: usize = 32 << 20;

/// What is left of one config's compile budget.
#[derive(Debug)]
struct Budget {
    left: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            left: CONFIG_COMPILE_BUDGET,
        }
    }
}

/// One PEFT pattern key, compiled.
#[derive(Debug, Clone)]
enum Matcher {
    /// A key of plain characters and `.` (most keys: module paths) needs no regex engine: its
    /// regex matches a fixed-length suffix, where `.` is any character but a newline.
    Plain(Vec<char>),
    Regex(Regex),
    /// A key that is not a valid regex can still match literally.
    Literal(String),
}

impl Matcher {
    /// PEFT's rule (`get_pattern_key` in peft/src/peft/utils/other.py): key K matches module
    /// path M when `re.match(rf"(.*\.)?({K})$", M)`, i.e. from M's start. A key whose automata
    /// would outgrow `KEY_SIZE_LIMIT` or what is left of `budget` is an error: lorascope cannot
    /// follow the config, and says so rather than stall.
    fn new(key: &str, budget: &mut Budget) -> Result<Matcher, String> {
        const META: &str = "\\+*?()|[]{}^$";
        if !key.chars().any(|c| META.contains(c)) {
            return Ok(Matcher::Plain(key.chars().collect()));
        }
        COMPILATIONS.fetch_add(1, Ordering::Relaxed);
        let limit = KEY_SIZE_LIMIT.min(budget.left);
        let built = Regex::builder()
            .configure(Regex::config().nfa_size_limit(Some(limit)))
            .build(&format!(r"^(.*\.)?({key})$"));
        match built {
            Ok(re) => {
                budget.left = budget.left.saturating_sub(re.memory_usage());
                Ok(Matcher::Regex(re))
            }
            Err(e) if e.size_limit().is_some() => {
                budget.left = 0;
                Err(if limit == KEY_SIZE_LIMIT {
                    format!(
                        "compiles to more than {} MiB, the limit of one key",
                        KEY_SIZE_LIMIT >> 20
                    )
                } else {
                    format!(
                        "goes past {} MiB compiled, the budget of one config's pattern keys together",
                        CONFIG_COMPILE_BUDGET >> 20
                    )
                })
            }
            Err(_) => Ok(Matcher::Literal(key.to_string())),
        }
    }

    fn is_match(&self, module: &str) -> bool {
        match self {
            Matcher::Plain(key) => {
                // `^(.*\.)?(K)$`: K on the last |K| characters, preceded by nothing or by a
                // literal dot after a newline-free prefix.
                let m: Vec<char> = module.chars().collect();
                let Some(start) = m.len().checked_sub(key.len()) else {
                    return false;
                };
                let tail_ok =
                    key.iter()
                        .zip(&m[start..])
                        .all(|(k, c)| if *k == '.' { *c != '\n' } else { k == c });
                tail_ok && (start == 0 || (m[start - 1] == '.' && !m[..start].contains(&'\n')))
            }
            Matcher::Regex(re) => re.is_match(module),
            Matcher::Literal(key) => {
                module == key
                    || module
                        .strip_suffix(key.as_str())
                        .is_some_and(|m| m.ends_with('.'))
            }
        }
    }
}

/// A key as a message shows it: its first 40 characters (keys can be kilobytes long).
fn shorten(key: &str) -> String {
    let mut s: String = key.chars().take(40).collect();
    if s.len() < key.len() {
        s.push('…');
    }
    s
}

/// PEFT's rule for one key and one module path, compiling the key on every call (with a
/// budget of its own; a key over the limit matches nothing): for a config's patterns use
/// `Patterns`, which compiles each key once.
pub fn pattern_matches(key: &str, module: &str) -> bool {
    Matcher::new(key, &mut Budget::new()).is_ok_and(|m| m.is_match(module))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_match_exactly_as_their_regex() {
        let keys = [
            "q_proj",
            "7.mlp.experts",
            "layers.1.self_attn.q_proj",
            "mlp.experts.gate_up_proj",
            "é.x",
            "a",
            ".",
            "..",
        ];
        let modules = [
            "model.layers.7.mlp.experts",
            "model.layers.17.mlp.experts",
            "model.layers.7xmlp.experts",
            "7.mlp.experts",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.qq_proj",
            "q_proj",
            "xq_proj",
            "a.q_proj",
            "a\n.q_proj",
            "a.q\nproj",
            "é.x",
            "b.é.x",
            "bé.x",
            "a",
            ".a",
            "",
            ".",
            "x.",
        ];
        for k in keys {
            let plain = Matcher::new(k, &mut Budget::new()).expect("plain");
            assert!(matches!(plain, Matcher::Plain(_)), "{k}");
            let re = Regex::new(&format!(r"^(.*\.)?({k})$")).expect("regex");
            for m in modules {
                assert_eq!(plain.is_match(m), re.is_match(m), "key {k:?} on {m:?}");
            }
        }
    }
}

/// Ordered pattern keys with their values (`rank_pattern`, `alpha_pattern`), each key compiled
/// once when the config is parsed: a config with thousands of keys is then matched against
/// every module without recompiling anything.
#[derive(Debug, Clone, Default)]
pub struct Patterns<T> {
    entries: Vec<(String, T)>,
    compiled: Vec<Matcher>,
}

impl<T: PartialEq> PartialEq for Patterns<T> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<T> Patterns<T> {
    /// Compiles the keys of config field `field`, drawing on `budget`; a key too costly to
    /// compile is an error that names it.
    fn compile(
        field: &str,
        entries: Vec<(String, T)>,
        budget: &mut Budget,
    ) -> Result<Patterns<T>, String> {
        let compiled = entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| {
                Matcher::new(k, budget).map_err(|why| {
                    format!(
                        "{field} key {} of {} ('{}') {why}",
                        i + 1,
                        entries.len(),
                        shorten(k)
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Patterns { entries, compiled })
    }

    /// The keys, in the config's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The keys and values, in the config's order.
    pub fn entries(&self) -> &[(String, T)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether key `i` matches `module`.
    pub fn matches(&self, i: usize, module: &str) -> bool {
        self.compiled[i].is_match(module)
    }

    /// The value of the first key (in the config's order, as PEFT) that matches any of `modules`.
    pub fn first_match(&self, modules: &[&str]) -> Option<&T> {
        self.compiled
            .iter()
            .position(|m| modules.iter().any(|x| m.is_match(x)))
            .map(|i| &self.entries[i].1)
    }
}

impl AdapterConfig {
    /// Rank r for a module path (without `base_model.model.`): rank_pattern, else `r`.
    pub fn rank_for(&self, module: &str) -> usize {
        self.rank_pattern
            .first_match(&[module])
            .copied()
            .unwrap_or(self.r)
    }

    /// Scale s for a module of rank `r`: alpha/r, or alpha/sqrt(r) with rsLoRA; mlx-lm's own scale.
    pub fn scale_for(&self, module: &str, r: usize) -> f64 {
        if let Some(s) = self.mlx_scale {
            return s;
        }
        let alpha = self
            .alpha_pattern
            .first_match(&[module])
            .copied()
            .unwrap_or(self.lora_alpha);
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
