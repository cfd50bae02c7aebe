fn main() -> std::process::ExitCode {
    controller::app::main(std::env::args().skip(1).collect())
}
