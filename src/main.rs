fn main() -> std::process::ExitCode {
    lorascope::cli::main()
}
