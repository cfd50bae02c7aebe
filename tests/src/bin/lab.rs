//! `lab`: the local mesh (see `lab::cli`).

fn main() -> std::process::ExitCode {
    lab::cli::main()
}
