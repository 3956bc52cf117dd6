//! How a holdfast process takes memory from the kernel: shared by `holdfast` and the load
//! harness (`holdfast-load`), which both allocate with mimalloc.

/// No transparent huge pages for this process (`prctl(PR_SET_THP_DISABLE)`), called first
/// thing in `main`, before any thread starts. mimalloc marks its arenas for huge pages where
/// the kernel allows them (`transparent_hugepage=madvise`), so every fresh page it touched
/// faulted in and zeroed 2 MiB at once: `clear_page_erms` was a fifth of the server's samples
/// under the launch, and 14% of the harness's. Without them, the same server binary booked
/// 4-24% more (three alternating pairs, docs/PERFORMANCE.md, "Events, audit and webhooks,
/// second sitting"). Best effort: a kernel that refuses leaves them on, and says so.
pub fn no_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("note: transparent huge pages stay on ({e})");
    }
}
