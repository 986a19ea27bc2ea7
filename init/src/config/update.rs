//! `[update]`: how the node updates itself (`terra update`, its timer) and how long the
//! confirmation waits for health checks. Plain data: `terra update` (builder) parses the
//! window and delay and owns what they mean; the booted system's `bless` reads
//! `health_timeout`.

use serde::Deserialize;

/// `[update]` of node.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// Where newer images come from: an image reference whose tag is followed (by digest),
    /// or `"controller"` (the fleet controller names the image).
    pub source: Option<String>,
    /// `immediate` (stage and apply when found), `window` (stage when found, apply inside
    /// [`UpdateSection::window`]) or `manual` (stage only; `terra apply` applies). Default
    /// `window` when a window is set, else `immediate`.
    pub strategy: Option<String>,
    /// When updates may reboot the node: `"Sat,Sun 02:00-04:00"` (days, a time range, UTC
    /// unless a zone is named); several allowed.
    #[serde(default)]
    pub window: Vec<String>,
    /// A random delay before applying (`"30m"`, `"90s"`, `"2h"`), so a fleet does not
    /// reboot at once.
    pub delay: Option<String>,
    /// A drain hook that must exit 0 before an update reboots the node.
    pub pre_reboot: Option<String>,
    /// Fetch images from this registry (`HOST[:PORT]`) instead of the one their reference
    /// names: the node's own way to the same images (a mirror, or the registry a controller
    /// names as the node's network reaches it). Content is checked by digest either way.
    pub mirror: Option<String>,
    /// Talk plain HTTP to the source's registry (one on the node's own network, as
    /// `--plain-http` does on the command line).
    #[serde(default)]
    pub plain_http: bool,
    /// Seconds each health check in `/etc/terra/health.d/` may take before it counts as
    /// failed (default [`DEFAULT_HEALTH_TIMEOUT`]).
    pub health_timeout: Option<u64>,
}

/// Seconds a health check may run unless `[update] health_timeout` says otherwise.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 120;
