//! The `conduit` binary: everything happens in [`conduit::cli`].

fn main() -> std::process::ExitCode {
    limit_allocator_heaps();
    conduit::cli::main()
}

/// glibc's allocator gives threads that allocate at the same time heaps of
/// their own, up to eight per core, and keeps what each heap once held: a
/// busy session (initial syncs on blocking threads, concurrent senders)
/// reached a peak RSS of 122 MiB where one heap per core keeps it at
/// 83 MiB, with the same sustained throughput (BENCHMARKS.md, "Memory").
/// Set before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_allocator_heaps() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 64);
    let heaps = libc::c_int::try_from(cores).unwrap_or(1);
    // SAFETY: `mallopt` only sets a parameter of the C allocator; no Rust
    // memory is involved, and no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, heaps);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_allocator_heaps() {}
