//! Writes the survey's 140 repos (see `lorascope::synth::survey`) as a hub cache of sparse files:
//! `cargo run --release --example survey_cache -- DIR`, then `lorascope report --cache DIR`.

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: survey_cache DIR");
        return std::process::ExitCode::FAILURE;
    };
    let repos = lorascope::synth::survey::repos();
    match lorascope::synth::survey::write_cache(std::path::Path::new(&dir), &repos) {
        Ok(w) => {
            println!(
                "wrote {} repos, {} bytes of files (sparse)",
                w.repos, w.bytes
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("survey_cache: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
