//! `terra serve`, `terra node` and `terra rollout`: handed to terra-controller untouched.

use std::ffi::OsString;

use clap::Args;

use super::Error;

/// The arguments `terra serve` and `terra node` hand to terra-controller untouched.
#[derive(Debug, Args)]
pub struct Passthrough {
    /// terra-controller's arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// `terra serve` and `terra node` live in `terra-controller` (the controller crate stands
/// on this one, never the other way): exec it with the arguments from the subcommand's
/// name on, exactly as given, found beside this executable, then on `$PATH`. Returns only
/// on failure.
pub fn exec_controller() -> Error {
    use std::os::unix::process::CommandExt;
    const NAME: &str = "terra-controller";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(NAME)))
        .filter(|p| p.is_file());
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(NAME))
            .find(|p| p.is_file())
    });
    let Some(program) = beside.clone().or(on_path) else {
        return Error::Usage(format!(
            "the controller ({NAME}) is not installed: looked beside {} and on $PATH \
             (build it with `cargo build -p terra-controller`)",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "terra".into())
        ));
    };
    // The global options before the subcommand (`-q`) take no value, so the first
    // `serve` or `node` is the subcommand; what follows it clap has not rewritten.
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .skip_while(|a| a != "serve" && a != "node" && a != "rollout")
        .collect();
    let err = std::process::Command::new(&program).args(args).exec();
    Error::Usage(format!("{}: {err}", program.display()))
}
