//! The `conduit` binary: everything happens in [`conduit::cli`].

fn main() -> std::process::ExitCode {
    conduit::cli::main()
}
