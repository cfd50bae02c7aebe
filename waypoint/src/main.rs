/// jemalloc (feature `jemalloc`, the default): with glibc's allocator every request's
/// 8 KiB read buffers and its future took the slow path (bins and fastbin consolidation);
/// jemalloc's size classes take them from per-thread caches (+3% requests per CPU-second
/// in the waypoint benchmark, BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    waypoint::app::main(std::env::args().skip(1))
}
