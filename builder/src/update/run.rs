//! `terra update` carried out: read the policy and the state, look up what the source names
//! (one manifest request), [`decide`], then stage (`upgrade --download-only`), run the drain
//! hook, apply and reboot, each step told through `say`.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use terra_init::bootstate::{Status, DEFAULT_TRIES, STATE_DIR};
use terra_init::report::message::{self, Event, Message};
use terra_init::report::outbox::{Destination, Outbox};
use terra_init::report::target::Target as ControllerTarget;

use super::policy::{decide, DiskView, Plan, Policy, PolicyError, Source, Then};
use crate::oci::{self, ImageRef, Progress, ResolveOptions};
use crate::versions::{self, Target, UpgradeSpec, Upgraded, VersionsError};

/// How `terra update` runs.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    /// Say what would be done, do nothing.
    pub check_only: bool,
    /// Skip the policy's random delay.
    pub no_delay: bool,
    /// Resolution (platform, plain HTTP, extra keys); node.toml's `plain_http` adds to it.
    pub resolve: ResolveOptions,
}

/// What `terra update` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// node.toml has no `[update] source`.
    NoPolicy,
    /// Only looked ([`UpdateOptions::check_only`]): the plan.
    Checked(Plan),
    /// Nothing to do: the plan said so.
    Nothing(Plan),
    /// A version was staged (or was staged already) and waits.
    Staged(String),
    /// A version was applied; with a reboot it is starting (this returns only without
    /// one: `--disk`, or when the reboot could not start).
    Applied(String),
    /// The source is the controller, which names no image for this node now.
    NotNamed,
}

/// Why `terra update` stopped.
#[derive(Debug)]
pub enum UpdateError {
    /// node.toml's `[update]` cannot be used (the file and key).
    Policy {
        /// The node.toml it came from.
        file: String,
        /// The key and what is wrong.
        err: PolicyError,
    },
    /// The source says `controller`, and the controller cannot be asked or answered
    /// something unusable (the file or controller and why).
    Controller(String),
    /// Looking up, fetching or building failed.
    Versions(VersionsError),
    /// The drain hook failed: nothing was applied.
    Hook {
        /// The hook.
        path: String,
        /// How it failed.
        why: String,
    },
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Policy { file, err } => write!(f, "{file}: {err}"),
            UpdateError::Controller(why) => f.write_str(why),
            UpdateError::Versions(e) => write!(f, "{e}"),
            UpdateError::Hook { path, why } => write!(
                f,
                "update.pre_reboot {path}: {why}: the update was not applied (it stays staged; \
                 the next run tries again)"
            ),
        }
    }
}

impl std::error::Error for UpdateError {}

impl From<VersionsError> for UpdateError {
    fn from(e: VersionsError) -> Self {
        UpdateError::Versions(e)
    }
}

impl From<oci::OciError> for UpdateError {
    fn from(e: oci::OciError) -> Self {
        UpdateError::Versions(e.into())
    }
}

/// Bound on the drain hook.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `terra update` on `target` at `now`; `say` gets a line for each step.
pub fn update(
    target: &Target,
    opts: &UpdateOptions,
    now: Timestamp,
    progress: &dyn Progress,
    say: &mut dyn FnMut(String),
) -> Result<Updated, UpdateError> {
    let (node, state, booted, disk, controller) = {
        let top = versions::open(target)?;
        let node = top.node()?;
        // The token beside node.toml is read while the top level is mounted.
        let controller = Destination::load(&node.controller, &top.path.join(STATE_DIR));
        (
            node,
            top.state()?,
            top.booted.clone(),
            top.disk.clone(),
            controller,
        )
    };
    let file = format!("{disk}: .terra/node.toml");
    let Some(policy) = Policy::from_section(&node.update).map_err(|err| UpdateError::Policy {
        file: file.clone(),
        err,
    })?
    else {
        say(format!(
            "{file} has no [update] source: this node does not update itself"
        ));
        return Ok(Updated::NoPolicy);
    };
    let (source, named_by) = match &policy.source {
        Source::Image(r) => (r.clone(), None),
        Source::Controller => {
            let dest = controller
                .map_err(|e| UpdateError::Controller(format!("{file}: {e}")))?
                .ok_or_else(|| {
                    UpdateError::Controller(format!(
                        "{file}: update.source = \"controller\" needs [controller] url (and its \
                         token file), as `terra node add --disk-node` hands them out"
                    ))
                })?;
            let answer = dest.target(ASK_BOUND).map_err(|e| {
                UpdateError::Controller(format!(
                    "asking the controller at {} for this node's image: {e}",
                    dest.url_text()
                ))
            })?;
            let Some(t) = answer.target else {
                say(format!(
                    "the controller at {} names no image for this node now: nothing to do",
                    dest.url_text()
                ));
                return Ok(Updated::NotNamed);
            };
            let pinned = pin(&t.image, &t.digest, node.update.mirror.as_deref())?;
            say(format!(
                "the controller at {} names {} (rollout {}), fetched as {pinned}",
                dest.url_text(),
                t.digest,
                t.rollout,
            ));
            (pinned, Some((dest, t)))
        }
    };
    let r: ImageRef = source.parse().map_err(VersionsError::from)?;
    let mut resolve = opts.resolve.clone();
    resolve.plain_http |= node.update.plain_http;
    let named = oci::lookup(&r, &resolve)?;
    let digest = named.manifest.to_string();
    if let Some((_, t)) = &named_by {
        if digest != t.digest {
            return Err(UpdateError::Controller(format!(
                "{source} is {digest}, not {} as the controller named it: nothing was fetched",
                t.digest
            )));
        }
    }
    let view = DiskView {
        booted_tentative: booted
            .clone()
            .filter(|b| state.get(b).is_some_and(|v| v.status == Status::Tentative)),
        current: state
            .versions
            .iter()
            .find(|v| v.digest == digest && matches!(v.status, Status::Good | Status::Tentative))
            .map(|v| v.name.clone()),
        staged: state
            .staged
            .iter()
            .rev()
            .find(|v| v.digest == digest)
            .map(|v| v.name.clone()),
        rejected: state.rejection(&digest).map(|r| {
            format!(
                "{} was rejected on this node as {}: {}",
                digest, r.name, r.reason
            )
        }),
    };
    let plan = decide(&policy, &view, now);
    say(format!(
        "{source} names {digest}; {}",
        describe(&plan, policy.strategy)
    ));
    if opts.check_only {
        return Ok(Updated::Checked(plan));
    }
    let Plan::Update { staged, then } = plan.clone() else {
        return Ok(Updated::Nothing(plan));
    };
    let name = match staged {
        Some(name) => name,
        None => {
            let mut spec = UpgradeSpec::new(&named.pinned);
            spec.resolve = resolve.clone();
            spec.stage_only = true;
            match versions::upgrade_with(target, &spec, progress)? {
                Upgraded::Staged { name, .. } => {
                    say(format!(
                        "staged {named} as version {name}",
                        named = named.pinned
                    ));
                    name
                }
                Upgraded::Same(name) => return Ok(Updated::Nothing(Plan::UpToDate(name))),
                other => other.name().to_string(),
            }
        }
    };
    let until = match then {
        Then::Wait(_) => return Ok(Updated::Staged(name)),
        Then::Apply { until } => until,
    };
    if !policy.delay.is_zero() && !opts.no_delay {
        let wait = random_below(policy.delay);
        say(format!(
            "waiting {}s (update.delay) before applying {name}",
            wait.as_secs()
        ));
        std::thread::sleep(wait);
        if until.is_some_and(|end| Timestamp::now() >= end) {
            say(format!(
                "the window closed while waiting: {name} stays staged"
            ));
            return Ok(Updated::Staged(name));
        }
    }
    let reboot = target.disks.is_empty();
    if reboot {
        if let Some(hook) = &policy.pre_reboot {
            say(format!("running update.pre_reboot {}", hook.display()));
            run_hook(hook, &name)?;
        }
    }
    let applied = versions::apply(target, Some(&name), DEFAULT_TRIES)?;
    say(format!(
        "applied {}: tentative with {} tries{}",
        applied.name,
        applied.tries,
        applied
            .superseded
            .as_ref()
            .map_or(String::new(), |s| format!(" ({s} superseded)"))
    ));
    if let Some((dest, t)) = &named_by {
        // The name this boot was reported under, else node.toml's, else the kernel's.
        let host = Outbox::system()
            .hostname()
            .or(node.hostname.clone())
            .unwrap_or_else(|| {
                rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned()
            });
        tell_applied(dest, &host, &applied.name, t, say);
    }
    if reboot {
        let restart = versions::prepare_reboot(target, &applied.name)?;
        say(restart.to_string());
        restart.start()?;
    }
    Ok(Updated::Applied(applied.name))
}

/// How long `terra update` waits for the controller's answer, and for it to hear that a
/// version was applied.
pub const ASK_BOUND: Duration = Duration::from_secs(10);

/// The reference to fetch the controller's `image` at `digest` by: pinned by digest, through
/// `mirror` (`HOST[:PORT]`) when the node has one. Only registry images: a layout or an
/// archive on the controller's host means nothing on the node.
pub fn pin(image: &str, digest: &str, mirror: Option<&str>) -> Result<String, UpdateError> {
    let refuse =
        |why: String| UpdateError::Controller(format!("the controller names {image}: {why}"));
    let r: ImageRef = image
        .parse()
        .map_err(|e: oci::OciError| refuse(e.to_string()))?;
    let ImageRef::Registry(r) = r else {
        return Err(refuse(
            "not a registry image (a layout or archive on the controller's host cannot be \
             fetched by a node)"
                .into(),
        ));
    };
    let registry = match mirror.map(str::trim) {
        Some(m) if !m.is_empty() => {
            if m.contains('/') || m.contains('@') || m.chars().any(char::is_whitespace) {
                return Err(UpdateError::Controller(format!(
                    "update.mirror {m:?}: a registry is HOST[:PORT]"
                )));
            }
            m.to_string()
        }
        _ => r.registry().to_string(),
    };
    Ok(format!("{registry}/{}@{digest}", r.repository()))
}

/// Tells the controller that node `host` applied version `name` (its `t`) and restarts
/// into it: the rollout then waits for that boot. Not fatal when the controller does not
/// hear it: the boot's own report still reaches it.
fn tell_applied(
    dest: &Destination,
    host: &str,
    name: &str,
    t: &ControllerTarget,
    say: &mut dyn FnMut(String),
) {
    let m = Message::from_system(
        Event::Applied,
        host.to_string(),
        "terra",
        Some(message::Version {
            name: name.to_string(),
            digest: t.digest.clone(),
            image: t.image.clone(),
            why: "tentative".into(),
            tentative: true,
            ..Default::default()
        }),
        None,
    );
    match dest.send(&m, ASK_BOUND) {
        Ok(_) => say(format!(
            "told the controller at {}: {name} applied",
            dest.url_text()
        )),
        Err(e) => say(format!(
            "the controller at {} did not hear that {name} was applied ({e}); the boot's report \
             tells it",
            dest.url_text()
        )),
    }
}

fn describe(plan: &Plan, strategy: super::Strategy) -> String {
    match plan {
        Plan::UpToDate(v) => format!("version {v} is that image already: nothing to do"),
        Plan::Rejected(why) => {
            format!("{why}; not applying it again (`terra upgrade --force REF@sha256:…` would)")
        }
        Plan::WaitForConfirmation(v) => {
            format!("the running version {v} is not confirmed yet: nothing is applied before it is")
        }
        Plan::Update { staged, then } => {
            let fetch = match staged {
                Some(v) => format!("staged as {v} already"),
                None => "not on this node: stage it".to_string(),
            };
            let next = match then {
                Then::Apply { until: Some(end) } => {
                    format!("the window is open until {end}: apply it and reboot")
                }
                Then::Apply { until: None } => "apply it and reboot (strategy immediate)".into(),
                Then::Wait(Some(o)) => format!(
                    "apply it in the next window, {} to {} (strategy {strategy})",
                    o.start, o.end
                ),
                Then::Wait(None) => match strategy {
                    super::Strategy::Manual => {
                        "leave it staged for `terra apply` (strategy manual)".into()
                    }
                    _ => "leave it staged: no window opens".into(),
                },
            };
            format!("{fetch}, then {next}")
        }
    }
}

/// A random duration in `[0, max)`: the standard library's randomly keyed hasher is
/// enough to spread a fleet's reboots.
fn random_below(max: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(r % ms)
}

/// Runs the drain hook as the booted system runs a health check (`terra_init::health::run`:
/// its own process group, killed whole at [`HOOK_TIMEOUT`], a clean environment plus
/// `TERRA_UPDATE_VERSION`, the end of its output kept) and says how it ended.
fn run_hook(hook: &Path, version: &str) -> Result<(), UpdateError> {
    let ran = terra_init::health::run(hook, HOOK_TIMEOUT, &[("TERRA_UPDATE_VERSION", version)]);
    if !ran.output.is_empty() {
        print!("{}", ran.output);
    }
    match ran.outcome {
        terra_init::health::Outcome::Passed => Ok(()),
        outcome => Err(UpdateError::Hook {
            path: hook.display().to_string(),
            why: outcome.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_controllers_image_is_fetched_by_digest_through_the_nodes_mirror() {
        assert_eq!(
            pin("127.0.0.1:5000/terra/node:stable", D, None).unwrap(),
            format!("127.0.0.1:5000/terra/node@{D}")
        );
        assert_eq!(
            pin("127.0.0.1:5000/terra/node:stable", D, Some("10.0.2.2:5000")).unwrap(),
            format!("10.0.2.2:5000/terra/node@{D}")
        );
        // Docker Hub's short names keep their repository.
        assert_eq!(
            pin("debian:12", D, Some("mirror.example")).unwrap(),
            format!("mirror.example/library/debian@{D}")
        );
        // What a node cannot fetch, and a mirror that is not a registry, are refused by name.
        let e = pin("oci:/srv/layout:v2", D, None).unwrap_err().to_string();
        assert!(
            e.contains("oci:/srv/layout:v2") && e.contains("not a registry"),
            "{e}"
        );
        let e = pin("r.example/os:v2", D, Some("r2.example/path"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("update.mirror"), "{e}");
        // The pinned reference parses back to the registry image.
        let r: ImageRef = pin("r.example/os:v2", D, None).unwrap().parse().unwrap();
        assert!(matches!(r, ImageRef::Registry(_)), "{r}");
    }
}
