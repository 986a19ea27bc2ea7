//! `terra update`: the node updates itself by node.toml's `[update]` policy.

use clap::Args;
use terra_builder::oci::Progress;
use terra_builder::update::{self, Plan, UpdateOptions, Updated};

use super::images::FetchArgs;
use super::versions::DiskArgs;
use super::CliError;

/// Look for a newer image and stage, apply and reboot into it by node.toml's [update]
///
/// Reads [update] from the node.toml `terra install` kept on the disk: `source` (an image
/// reference whose tag is followed by digest, or "controller": the fleet controller its
/// [controller] names says which image, by digest, through `mirror` when set), `strategy` (immediate, window or manual),
/// `window` ("Sat,Sun 02:00-04:00", UTC unless a zone is named; several allowed), `delay`
/// (a random wait before applying, "30m"), `pre_reboot` (a drain hook that must exit 0 before
/// the reboot) and `plain_http`. Asks the registry what the tag names (one manifest
/// request); when that is not a version already it is fetched (only the layers the disk
/// lacks) and staged, then applied and rebooted into (kexec where the machine allows) when
/// the strategy and the window say so. A digest that was rejected on this node (a failed
/// boot, health check or `terra bless bad`) is never applied again by `terra update`, and
/// nothing is applied while the running version is still tentative. The Debian package
/// ships terra-update.timer (hourly, off until `systemctl enable --now terra-update.timer`).
///
/// With --disk nothing reboots: the version is applied on the disk for its next boot.
#[derive(Debug, Args)]
#[command(after_long_help = super::versions::COMMON)]
pub struct UpdateArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Only say what would be done
    #[arg(long)]
    check: bool,
    /// Apply without the random [update] delay
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Runs `terra update`; a node without a policy, or with nothing to do, succeeds.
pub fn update(a: UpdateArgs, progress: &dyn Progress) -> Result<(), CliError> {
    let opts = UpdateOptions {
        check_only: a.check,
        no_delay: a.now,
        resolve: a.fetch.resolve()?,
    };
    let target = a.disk.target();
    let mut say = |line: String| println!("terra update: {line}");
    let done = update::update(&target, &opts, jiff::Timestamp::now(), progress, &mut say)?;
    match done {
        Updated::Staged(name) => say(format!("version {name} is staged")),
        Updated::Applied(name) if !target.disks.is_empty() => {
            say(format!("version {name} boots next from the disk"))
        }
        Updated::Nothing(Plan::Rejected(_))
        | Updated::Checked(_)
        | Updated::NoPolicy
        | Updated::NotNamed => {}
        Updated::Nothing(_) | Updated::Applied(_) => {}
    }
    Ok(())
}
