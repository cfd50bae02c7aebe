//! The `ztunnel` binary; everything is in the library (`ztunnel::app`).

fn main() -> std::process::ExitCode {
    ztunnel::app::main(std::env::args().skip(1))
}
