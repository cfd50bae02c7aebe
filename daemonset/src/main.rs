//! The `node-agent` binary; everything is in the library (`daemonset::app`).

fn main() -> std::process::ExitCode {
    daemonset::app::main(std::env::args().skip(1))
}
