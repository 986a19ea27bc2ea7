//! `terra serve` and `terra node`.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the command line `args` (without the program name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let _ = args;
    eprintln!("terra-controller: not built yet");
    ExitCode::from(2)
}
