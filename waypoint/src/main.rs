fn main() -> std::process::ExitCode {
    waypoint::app::main(std::env::args().skip(1))
}
