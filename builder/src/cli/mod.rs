//! The `terra` command line, as one `clap` definition ([`Cli`]): help, errors with
//! suggestions, shell completions (`terra completions SHELL`) and man pages (`terra man
//! DIR`) all come from it. One file per command family parses its arguments, calls the
//! library and prints the result; main.rs dispatches to them.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use terra_builder::initramfs::InitramfsError;
use terra_builder::oci::{Progress, Silent};

pub mod artifacts;
pub mod controller;
pub mod create;
pub mod docs;
pub mod extension;
pub mod images;
mod progress_bar;
pub mod run;
pub mod sign;
pub mod update;
pub mod versions;

/// A library failure a command passes on, printed after `terra: `.
pub type CliError = Box<dyn std::error::Error>;

/// What `terra --help` ends with, and the README repeats.
const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the command failed (the line after `terra: ` says what, and where)
  2  usage error: unknown command or option, missing or invalid argument
`terra serve` and `terra node` exit with terra-controller's status.

Completions and man pages: `terra completions bash|zsh|fish|elvish|powershell` prints a
completion script; `terra man DIR` writes terra.1 and terra-<command>.1 into DIR. The
Debian package installs both.";

/// terra — builds Terra boot artifacts
#[derive(Debug, Parser)]
#[command(
    name = "terra",
    version,
    propagate_version = true,
    after_help = EXIT_STATUS,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Show no progress bars
    ///
    /// Results, warnings and errors are still printed. Progress bars are drawn only when
    /// stderr is a terminal.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Initramfs(artifacts::InitramfsArgs),
    Kernel(artifacts::KernelArgs),
    Iso(artifacts::IsoArgs),
    Pxe(artifacts::PxeArgs),
    Uki(artifacts::UkiArgs),
    Image(images::ImageArgs),
    Create(create::CreateArgs),
    Sign(sign::SignArgs),
    Key(sign::KeyArgs),
    Install(versions::InstallArgs),
    Run(run::RunArgs),
    Upgrade(versions::UpgradeArgs),
    Apply(versions::ApplyArgs),
    Update(update::UpdateArgs),
    Versions(versions::VersionsArgs),
    Bless(versions::BlessArgs),
    Rollback(versions::RollbackArgs),
    Gc(versions::GcArgs),
    Extension(extension::ExtensionArgs),
    /// Run the controller: provisions diskless nodes (terra-controller)
    ///
    /// Runs `terra-controller serve` with these arguments (found beside terra, then on
    /// $PATH); `terra serve --help` is the controller's help.
    #[command(disable_help_flag = true)]
    Serve(controller::Passthrough),
    /// Add, list, upgrade and delete the controller's nodes (terra-controller)
    ///
    /// Runs `terra-controller node` with these arguments (found beside terra, then on
    /// $PATH); `terra node --help` is the controller's help.
    #[command(disable_help_flag = true)]
    Node(controller::Passthrough),
    /// Move the controller's fleet to an image in waves (terra-controller)
    ///
    /// Runs `terra-controller rollout` with these arguments (found beside terra, then on
    /// $PATH); `terra rollout --help` is the controller's help.
    #[command(disable_help_flag = true)]
    Rollout(controller::Passthrough),
    /// Print a shell completion script on stdout
    ///
    /// bash: save it as ~/.local/share/bash-completion/completions/terra; zsh: as _terra
    /// in a directory on $fpath; fish: as ~/.config/fish/completions/terra.fish.
    #[command(hide = true)]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write the man pages (terra.1, terra-<command>.1) into a directory
    #[command(hide = true)]
    Man {
        /// The directory, created when missing
        dir: PathBuf,
    },
}

/// Why a command failed: what `terra: ` is followed by on stderr (exit status 1).
#[derive(Debug)]
pub enum Error {
    /// The command line or the environment.
    Usage(String),
    /// Building an initramfs, or reading `SOURCE_DATE_EPOCH`.
    Build(InitramfsError),
    /// Any other library error.
    Artifact(CliError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(e) => write!(f, "{e}"),
            Error::Build(e) => write!(f, "{e}"),
            Error::Artifact(e) => write!(f, "{e}"),
        }
    }
}

impl From<InitramfsError> for Error {
    fn from(e: InitramfsError) -> Self {
        Error::Build(e)
    }
}

impl From<CliError> for Error {
    fn from(e: CliError) -> Self {
        Error::Artifact(e)
    }
}

/// A library error as the binary prints it after `terra: `.
pub fn artifact(e: impl std::error::Error + 'static) -> Error {
    Error::Artifact(Box::new(e))
}

/// The progress observer for long work: a bar on a terminal, nothing otherwise.
pub fn progress(quiet: bool) -> Box<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        Box::new(Silent)
    } else {
        Box::new(progress_bar::Bar::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks over the whole definition (conflicting names,
    /// `requires` naming an argument that exists, …).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
