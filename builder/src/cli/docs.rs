//! `terra completions SHELL` and `terra man DIR`: both from the one definition, [`Cli`].

use std::path::Path;

use clap::CommandFactory;

use super::{Cli, Error};

/// Prints `shell`'s completion script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "terra", &mut std::io::stdout());
}

/// terra.1 and one page per (visible) subcommand, named terra-<command>[-<sub>].1.
pub fn man_pages(dir: &Path) -> Result<(), Error> {
    let failed = |e: std::io::Error| Error::Usage(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)
}
