//! terra, the builder: parses arguments ([`cli::Cli`]) and calls the command's function in
//! [`cli`], which calls the `terra_builder` library.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::{artifacts, controller, docs, images, versions, Cli, Command, Error};

fn main() -> ExitCode {
    // Usage errors exit 2 here (clap's convention), help and version 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terra: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs one command.
fn run(cli: Cli) -> Result<(), Error> {
    let progress = cli::progress(cli.quiet);
    let progress = progress.as_ref();
    match cli.command {
        Command::Initramfs(a) => artifacts::initramfs(a),
        Command::Kernel(a) => artifacts::kernel(a),
        Command::Iso(a) => artifacts::iso(a, progress),
        Command::Pxe(a) => artifacts::pxe(a),
        Command::Uki(a) => artifacts::uki(a),
        Command::Image(a) => Ok(images::image(a, progress)?),
        Command::Create(a) => Ok(cli::create::create(a)?),
        Command::Sign(a) => Ok(cli::sign::sign(a)?),
        Command::Key(a) => Ok(cli::sign::key(a)?),
        Command::Install(a) => {
            let installed = versions::install(a, progress)?;
            Ok(cli::extension::after_install(&installed, progress)?)
        }
        Command::Run(a) => Ok(cli::run::run(a, progress)?),
        Command::Upgrade(a) => Ok(versions::upgrade(a, progress)?),
        Command::Apply(a) => Ok(versions::apply(a)?),
        Command::Update(a) => Ok(cli::update::update(a, progress)?),
        Command::Versions(a) => Ok(versions::versions(a)?),
        Command::Bless(a) => Ok(versions::bless(a)?),
        Command::Rollback(a) => Ok(versions::rollback(a)?),
        Command::Gc(a) => Ok(versions::gc(a)?),
        Command::Extension(a) => Ok(cli::extension::extension(a, progress)?),
        Command::Serve(_) | Command::Node(_) | Command::Rollout(_) => {
            Err(controller::exec_controller())
        }
        Command::Completions { shell } => {
            docs::completions(shell);
            Ok(())
        }
        Command::Man { dir } => docs::man_pages(&dir),
    }
}
