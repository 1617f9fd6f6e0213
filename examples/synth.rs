//! Writes one synthetic adapter at real gpt-oss-20b shapes (for the benchmark scripts).
//!
//! cargo run --release --example synth -- DIR attn|peft|tinker [--rank R] [--expert-rank R]
//!     [--expert-layers 0,7,15] [--dtype F32|BF16] [--seed N]
//!     [--dims LAYERS,HIDDEN,Q_OUT,KV_OUT,EXPERTS,INTER] [--base-model ID]
//!     [--run trainer|mlx|kohya --steps 100,200,300 [--wake-expert E@STEP] [--frozen-expert E]]
//!
//! With `--run`, DIR becomes a training run: one checkpoint per step in that naming scheme,
//! σ growing over the steps, expert E zero before STEP (`--wake-expert`) or at every step
//! (`--frozen-expert`), and a `trainer_state.json` per Trainer checkpoint.

use lorascope::synth::run::{write_run, Naming, RunSpec, Select};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: synth DIR attn|peft|tinker [--rank R] [--expert-rank R] [--expert-layers L,..] [--dtype F32|BF16] [--seed N] [--dims L,H,Q,KV,E,I] [--base-model ID]");
        std::process::exit(2);
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, d: usize| flag(name).map_or(d, |v| v.parse().expect("a number"));
    let layers: Vec<usize> = flag("--expert-layers")
        .map(|v| v.split(',').map(|x| x.parse().expect("layer")).collect())
        .unwrap_or_else(|| vec![0, 7, 11, 15, 23]);
    let pattern = match args[1].as_str() {
        "attn" => Pattern::Attention,
        "peft" => Pattern::PeftExperts { layers },
        "tinker" => Pattern::Tinker3d,
        other => panic!("unknown pattern {other}"),
    };
    // Other sizes, e.g. a toy base for llama.cpp (tests/fixtures/writers/check_llamacpp.sh).
    let dims = flag("--dims").map_or(Dims::GPT_OSS_20B, |v| {
        let n: Vec<usize> = v.split(',').map(|x| x.parse().expect("a size")).collect();
        assert_eq!(n.len(), 6, "--dims takes 6 sizes");
        Dims {
            layers: n[0],
            hidden: n[1],
            q_out: n[2],
            kv_out: n[3],
            experts: n[4],
            inter: n[5],
        }
    });
    let mut spec = Spec::new(dims, pattern);
    if let Some(id) = flag("--base-model") {
        spec.base_model = id;
    }
    spec.attn_rank = num("--rank", 32);
    spec.expert_rank = num("--expert-rank", 8);
    spec.alpha = 2.0 * spec.attn_rank as f64;
    spec.seed = num("--seed", 1) as u64;
    spec.dtype = match flag("--dtype").as_deref() {
        Some("BF16") => Dtype::BF16,
        _ => Dtype::F32,
    };
    let dir = std::path::Path::new(&args[0]);
    if let Some(naming) = flag("--run") {
        let naming = match naming.as_str() {
            "trainer" => Naming::Trainer,
            "mlx" => Naming::Mlx,
            "kohya" => Naming::Kohya,
            other => panic!("unknown naming {other}"),
        };
        let steps: Vec<u64> = flag("--steps")
            .unwrap_or_else(|| "100,200,300,400,500,600,700,800,900,1000".into())
            .split(',')
            .map(|x| x.parse().expect("step"))
            .collect();
        let expert = |e: usize| Select {
            layer: None,
            target: None,
            expert: Some(e),
        };
        let mut run = RunSpec::new(spec, steps, naming);
        if let Some(w) = flag("--wake-expert") {
            let (e, at) = w.split_once('@').expect("E@STEP");
            run.wake.push((
                expert(e.parse().expect("expert")),
                at.parse().expect("step"),
            ));
        }
        if let Some(e) = flag("--frozen-expert") {
            run.frozen.push(expert(e.parse().expect("expert")));
        }
        let g = write_run(dir, &run).expect("write run");
        eprintln!("wrote {} checkpoints to {}", g.len(), args[0]);
        return;
    }
    let g = synth::write_adapter(dir, &spec).expect("write adapter");
    eprintln!("wrote {} tensors to {}", g.tensors.len(), args[0]);
}
