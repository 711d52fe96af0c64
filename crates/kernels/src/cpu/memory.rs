//! How the process's allocator treats the CPU backend's buffers.
//!
//! Every op returns a fresh tensor, and at the model's sizes most are
//! several MiB (`[6400, 256]` f32 is 6.5 MiB). glibc serves blocks that
//! large with `mmap` and gives them back to the system on `free` (or trims
//! its heap), so the next op's buffer comes back as fresh pages, each one a
//! page fault and a zeroing by the kernel. Measured on validation at
//! latest-small (docs/benchmarks.md): 40% of its time went to that.

/// Keeps freed memory in the process for reuse instead of returning it to
/// the system after every large tensor: on Linux with glibc, sets
/// `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` to 1 GiB (blocks under 1 GiB
/// come from the heap, and the heap is not trimmed). Peak memory is
/// unchanged (the heap keeps what was once in use, which the peak already
/// counted); elsewhere it does nothing. The `sasrec` binary calls it first
/// thing; research code using the CPU backend can too.
///
/// Call it before other threads allocate (`mallopt` is not synchronised
/// with them); calling it more than once is harmless.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_GIB: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters; the caller runs
        // this before other threads allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
        }
    }
}
