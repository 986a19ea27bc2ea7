//! terra-controller: `terra serve` and `terra node`, reached through the `terra` CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    terra_controller::cli::main(std::env::args_os().skip(1).collect())
}
