//! The names training runs give their checkpoints, and the step each name carries (docs/runs.md
//! cites the writers): the Transformers Trainer's `checkpoint-<global_step>` folders (TRL,
//! Unsloth and axolotl train through it), mlx-lm's `<iteration:07>_adapters.safetensors` files
//! beside `adapters.safetensors`, kohya sd-scripts' `<output_name>-<epoch:06>.safetensors` files
//! beside `<output_name>.safetensors`. Names only: whether the checkpoints are of one adapter is
//! decided on their headers (`run::detect`).

use crate::adapter::Source;

/// A naming scheme of checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Trainer,
    Mlx,
    Kohya,
    /// Revisions of a Hub repo fetched into the cache (`adapter::history`), steps from refs or
    /// trainer states.
    Hub,
    /// Revisions of a Hub repo whose steps are not known: a step is the revision's place in
    /// the order they were fetched.
    #[serde(rename = "hub-fetch-order")]
    HubFetchOrder,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Trainer => "trainer",
            Scheme::Mlx => "mlx",
            Scheme::Kohya => "kohya",
            Scheme::Hub => "hub",
            Scheme::HubFetchOrder => "hub-fetch-order",
        }
    }
}

fn number(digits: &str, min_len: usize) -> Option<u64> {
    (digits.len() >= min_len && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The step of a Trainer checkpoint folder: `checkpoint-500` → 500.
pub fn trainer_step(folder: &str) -> Option<u64> {
    number(folder.strip_prefix("checkpoint-")?, 1)
}

/// The iteration of an mlx-lm checkpoint file: `0000100_adapters.safetensors` → 100.
pub fn mlx_step(file: &str) -> Option<u64> {
    number(file.strip_suffix("_adapters.safetensors")?, 7)
}

/// The output name and epoch of a kohya checkpoint file: `mylora-000003.safetensors` →
/// (`mylora`, 3). Exactly six digits (`{:06d}`; a model's `-00001-of-00003` shards never match).
pub fn kohya_step(file: &str) -> Option<(&str, u64)> {
    let (name, digits) = file.strip_suffix(".safetensors")?.rsplit_once('-')?;
    (!name.is_empty() && digits.len() == 6)
        .then(|| number(digits, 6).map(|n| (name, n)))
        .flatten()
}

/// The scheme, run name (kohya's output name, else "") and step of a checkpoint file's name.
pub fn file_step(file: &str) -> Option<(Scheme, &str, u64)> {
    if let Some(s) = mlx_step(file) {
        return Some((Scheme::Mlx, "", s));
    }
    kohya_step(file).map(|(n, s)| (Scheme::Kohya, n, s))
}

/// Whether the `.safetensors` files of one folder are checkpoints written side by side, each an
/// adapter of its own: at least one file carries a step, all stepped files share one scheme and
/// name, and every other file is that scheme's latest copy (`adapters.safetensors`,
/// `<name>.safetensors`).
pub fn side_by_side(files: &[&str]) -> bool {
    let stepped: Vec<(Scheme, &str)> = files
        .iter()
        .filter_map(|f| file_step(f))
        .map(|(s, n, _)| (s, n))
        .collect();
    let Some(&(scheme, name)) = stepped.first() else {
        return false;
    };
    if stepped.iter().any(|&x| x != (scheme, name)) {
        return false;
    }
    let latest = match scheme {
        Scheme::Mlx => "adapters.safetensors".to_string(),
        _ => format!("{name}.safetensors"),
    };
    files
        .iter()
        .all(|f| *f == latest || file_step(f).is_some_and(|(s, n, _)| (s, n) == (scheme, name)))
}

/// A folder's source as one source per checkpoint file when its files are checkpoints side by
/// side (`side_by_side`), each with the id `<folder id>/<file name>` (as a GGUF file beside
/// others); else the source unchanged.
pub fn split(src: Source) -> Vec<Source> {
    let names: Vec<String> = src
        .files
        .iter()
        .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Option<_>>()
        .unwrap_or_default();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if src.files.len() < 2 || !side_by_side(&refs) {
        return vec![src];
    }
    src.files
        .iter()
        .zip(&names)
        .map(|(f, name)| Source {
            id: format!("{}/{name}", src.id),
            path: f.clone(),
            files: vec![f.clone()],
            ..src.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_from_names() {
        assert_eq!(trainer_step("checkpoint-500"), Some(500));
        assert_eq!(trainer_step("checkpoint-"), None);
        assert_eq!(trainer_step("checkpoint-5x"), None);
        assert_eq!(trainer_step("ckpt-5"), None);
        assert_eq!(mlx_step("0000100_adapters.safetensors"), Some(100));
        assert_eq!(mlx_step("12345678_adapters.safetensors"), Some(12345678));
        assert_eq!(mlx_step("100_adapters.safetensors"), None);
        assert_eq!(mlx_step("adapters.safetensors"), None);
        assert_eq!(
            kohya_step("my-lora-000012.safetensors"),
            Some(("my-lora", 12))
        );
        assert_eq!(kohya_step("model-00001-of-00003.safetensors"), None);
        assert_eq!(kohya_step("-000001.safetensors"), None);
    }

    #[test]
    fn side_by_side_folders() {
        let mlx = [
            "0000100_adapters.safetensors",
            "0000200_adapters.safetensors",
            "adapters.safetensors",
        ];
        assert!(side_by_side(&mlx));
        assert!(side_by_side(&["a-000001.safetensors", "a.safetensors"]));
        // Two kohya names, a stray file, or none stepped: the folder stays one adapter.
        assert!(!side_by_side(&[
            "a-000001.safetensors",
            "b-000001.safetensors"
        ]));
        assert!(!side_by_side(&[
            "0000100_adapters.safetensors",
            "extra.safetensors"
        ]));
        assert!(!side_by_side(&["adapter_model.safetensors"]));
        assert!(!side_by_side(&[
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]));
    }
}
