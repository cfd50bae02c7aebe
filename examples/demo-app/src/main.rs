//! The `demo-app` binary; everything is in the library (`demo_app::main`).

fn main() -> std::process::ExitCode {
    demo_app::main(std::env::args().skip(1))
}
