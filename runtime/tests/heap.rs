//! `hold_freed_heap_until_trim` on glibc: blocks of a few hundred KiB (ztunnel's bulk copy
//! buffers) come from the heap instead of a fresh mapping each, and the heap is not
//! trimmed on every large free. Its own test binary, so no other test has moved glibc's
//! dynamic thresholds first.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

/// glibc's `struct mallinfo2` (glibc >= 2.33).
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    /// Bytes in mmapped blocks.
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

#[allow(unsafe_code)]
unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

#[allow(unsafe_code)]
fn mapped_bytes() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct.
    unsafe { mallinfo2() }.hblkhd
}

#[test]
fn large_buffers_come_from_the_heap_once_the_process_trims_itself() {
    const BUFFER: usize = 256 * 1024;
    runtime::hold_freed_heap_until_trim();
    let before = mapped_bytes();
    let buffer = std::hint::black_box(vec![7u8; BUFFER]);
    assert_eq!(
        mapped_bytes(),
        before,
        "a {BUFFER}-byte buffer was mapped on its own instead of taken from the heap"
    );
    drop(buffer);
    // Given back by the trim the process runs itself.
    runtime::release_free_heap();
}
