//! `private-storage`: the server and its operator commands (see `private-storage --help`).

fn main() -> std::process::ExitCode {
    private_storage_server::cli::run()
}
