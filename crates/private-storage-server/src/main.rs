//! `private-storage`: the server and its operator commands (see `private-storage --help`).

/// mimalloc rather than glibc's malloc: allocation and freeing were ~12% of a small download's
/// CPU under load (bench/README.md, issue #13), and glibc keeps freed memory in per-thread arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    private_storage_server::cli::run()
}
