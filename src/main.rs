//! The `feedscope` command line. Everything it does is in the `cli` module tree; this file
//! only hands over to it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
