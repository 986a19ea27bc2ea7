//! Provisioning, deleting and upgrading nodes, crash-safe.
//!
//! A node's work is a journal of steps (`lun`, `target`, `entry`), each recorded *before* it
//! runs. A failure undoes the recorded steps in reverse and marks the node `failed` with the
//! step and the cause; a controller killed mid-way finds the node still `provisioning` on
//! restart, undoes what the journal holds and provisions it again, so it ends `ready` or,
//! failing that, `failed` with nothing left behind. A sweep at start removes targets, LUN
//! files and TFTP entries no node owns. Nodes provision concurrently: each node's work is
//! serialized by its own lock, never by a global one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use terra_builder::oci::{self, ImageRef, ResolveOptions};
use terra_builder::versions::{self, crash_point, UpgradeSpec};

use crate::boot;
use crate::db::{AddError, Db, DbError, NodeRow};
use crate::node::{self, Chap, NodeSpec, SpecError};
use crate::storage::{CloneKind, Storage};
use crate::tgt::{Tgt, TgtError};

/// Node states.
pub mod state {
    /// Its steps are running.
    pub const PROVISIONING: &str = "provisioning";
    /// Its LUN, target and entry exist.
    pub const READY: &str = "ready";
    /// Its initiator has logged in to its target.
    pub const BOOTED: &str = "booted";
    /// A version is being added to its LUN.
    pub const UPGRADING: &str = "upgrading";
    /// Its resources are being removed.
    pub const DELETING: &str = "deleting";
    /// A step failed (the reason says which and why); nothing of it is left.
    pub const FAILED: &str = "failed";
    /// A node with its own disk (`node add --disk-node`): it reports its boots and asks
    /// for its target image; the controller holds nothing of it.
    pub const DISK: &str = "disk";
}

impl From<AddError> for ControllerError {
    fn from(e: AddError) -> Self {
        match e {
            AddError::Taken { field, value, node } => ControllerError::Taken { field, value, node },
            AddError::Db(e) => ControllerError::Db(e),
        }
    }
}

/// A new node's report token (32 random alphanumerics), the failure named as its step.
fn report_token(hostname: &str) -> Result<String, ControllerError> {
    node::random_token(32).map_err(|e| ControllerError::Step {
        node: hostname.to_string(),
        step: "token",
        cause: format!("random: {e}"),
    })
}

/// Journal step names.
const STEP_LUN: &str = "lun";
const STEP_TARGET: &str = "target";
const STEP_ENTRY: &str = "entry";

/// Why a controller operation failed; each names the node and, for provisioning, the step.
#[derive(Debug)]
pub enum ControllerError {
    /// The node.toml.
    Spec(SpecError),
    /// The image cannot be resolved (nothing was created).
    Image {
        /// The reference.
        image: String,
        /// Why.
        message: String,
    },
    /// Hostname, MAC or initiator taken.
    Taken {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The node that has it.
        node: String,
    },
    /// No such node.
    NoNode(String),
    /// The node is not in a state that allows the operation.
    State {
        /// The node.
        node: String,
        /// What was asked.
        op: &'static str,
        /// Why not.
        why: String,
    },
    /// A provisioning step failed (and was undone).
    Step {
        /// The node.
        node: String,
        /// The step.
        step: &'static str,
        /// The cause.
        cause: String,
    },
    /// A rollout's request does not plan (bad waves, an unknown node, no match).
    Plan(String),
    /// No such rollout.
    NoRollout(String),
    /// The rollout (or a node in it) is not in a state that allows the operation.
    RolloutState(String),
    /// The database.
    Db(DbError),
}

impl fmt::Display for ControllerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerError::Spec(e) => write!(f, "{e}"),
            ControllerError::Image { image, message } => write!(f, "image {image}: {message}"),
            ControllerError::Taken { field, value, node } => {
                write!(f, "{field} {value} belongs to node {node} already")
            }
            ControllerError::NoNode(n) => write!(f, "no node named {n}"),
            ControllerError::State { node, op, why } => {
                write!(f, "node {node}: cannot {op}: {why}")
            }
            ControllerError::Step { node, step, cause } => {
                write!(f, "node {node}: step {step}: {cause}")
            }
            ControllerError::Plan(e) => write!(f, "rollout: {e}"),
            ControllerError::NoRollout(id) => write!(f, "no rollout {id}"),
            ControllerError::RolloutState(e) => write!(f, "{e}"),
            ControllerError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ControllerError {}

impl From<DbError> for ControllerError {
    fn from(e: DbError) -> Self {
        ControllerError::Db(e)
    }
}

/// How the controller was started.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Its id: the key of the nodes whose LUNs its state directory and tgtd hold.
    pub id: String,
    /// The portal nodes log in to (`host:port`, as they reach it).
    pub portal: String,
    /// Registries over plain HTTP.
    pub plain_http: bool,
    /// Every node gets generated CHAP credentials unless its node.toml gives some.
    pub chap: bool,
    /// LUN size, MiB.
    pub lun_mb: u64,
    /// Kernel arguments of every entry.
    pub cmdline: String,
    /// Where nodes send their boot reports (`[controller] url` in their node.toml): the
    /// URL nodes reach this controller at. Empty: nodes do not report.
    pub report_url: String,
    /// Images must carry a cosign signature by one of these keys (`serve --verify-key`):
    /// checked when a node is added (before anything is made), by the golden LUN's install
    /// (which keeps the keys on the LUN for the node's own upgrades) and by `node upgrade`.
    pub verify: Option<oci::VerifyPolicy>,
}

/// The controller's working parts.
pub struct Controller {
    /// The database.
    pub db: Db,
    /// The state directory.
    pub storage: Storage,
    /// Its tgtd.
    pub tgt: Tgt,
    /// Settings.
    pub settings: Settings,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Upgrades mount LUNs that are clones of one golden (one filesystem UUID): one at a time.
    upgrades: tokio::sync::Mutex<()>,
}

/// Runs blocking work (installs, clones, tgtd requests) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

impl Controller {
    /// A controller over its parts.
    pub fn new(db: Db, storage: Storage, tgt: Tgt, settings: Settings) -> Controller {
        Controller {
            db,
            storage,
            tgt,
            settings,
            locks: Mutex::new(HashMap::new()),
            upgrades: tokio::sync::Mutex::new(()),
        }
    }

    fn lock_of(&self, hostname: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("lock table")
            .entry(hostname.to_string())
            .or_default()
            .clone()
    }

    /// Node `hostname`, with its lock held: its work is serialized, other nodes' is not.
    async fn locked(
        &self,
        hostname: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, NodeRow), ControllerError> {
        let held = self.lock_of(hostname).lock_owned().await;
        Ok((held, self.existing(hostname).await?))
    }

    /// Node `hostname` as stored now.
    async fn existing(&self, hostname: &str) -> Result<NodeRow, ControllerError> {
        self.db
            .node(hostname)
            .await?
            .ok_or_else(|| ControllerError::NoNode(hostname.into()))
    }

    /// `node add`: checks the node.toml and the image (nothing is created when either is
    /// wrong), records the node and provisions it; returns it `ready` or the failed step.
    pub async fn add(&self, text: &str, file: &str) -> Result<NodeRow, ControllerError> {
        let spec = NodeSpec::parse(text, file).map_err(ControllerError::Spec)?;
        let digest = self.resolve(&spec.image).await?;
        let chap =
            match (&spec.chap, self.settings.chap) {
                (Some(c), _) => Some(c.clone()),
                (None, true) => Some(node::generate_chap(&spec.hostname).map_err(|e| {
                    ControllerError::Step {
                        node: spec.hostname.clone(),
                        step: "chap",
                        cause: e.to_string(),
                    }
                })?),
                (None, false) => None,
            };
        let row = NodeRow {
            hostname: spec.hostname.clone(),
            mac: spec.mac.to_string(),
            image: spec.image.clone(),
            digest,
            version: String::new(),
            initiator: spec.initiator.clone(),
            target: spec.target(),
            portal: self.settings.portal.clone(),
            controller: self.settings.id.clone(),
            tid: 0,
            state: state::PROVISIONING.into(),
            reason: String::new(),
            config: text.to_string(),
            chap: chap
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
                .unwrap_or_default(),
            updated: 0,
            report_token: report_token(&spec.hostname)?,
        };
        let row = self.db.add_node(row).await?;
        self.provision(&row.hostname).await
    }

    /// `node add --disk-node`: records a node with its own disk (only its hostname and a
    /// report token: it boots from its disk, reports its boots, and asks `/v1/target` for
    /// the image a rollout names). Returns it in state `disk`.
    pub async fn add_disk(&self, text: &str, file: &str) -> Result<NodeRow, ControllerError> {
        let hostname = node::disk_node_hostname(text, file).map_err(ControllerError::Spec)?;
        let placeholder = node::disk_placeholder(&hostname);
        let row = NodeRow {
            hostname: hostname.clone(),
            mac: placeholder.clone(),
            image: String::new(),
            digest: String::new(),
            version: String::new(),
            initiator: placeholder.clone(),
            target: placeholder,
            portal: String::new(),
            controller: String::new(),
            tid: 0,
            state: state::DISK.into(),
            reason: String::new(),
            config: text.to_string(),
            chap: String::new(),
            updated: 0,
            report_token: report_token(&hostname)?,
        };
        Ok(self.db.add_node(row).await?)
    }

    /// The manifest digest `image` resolves to (index and platform as for `terra install`).
    pub(crate) async fn resolve(&self, image: &str) -> Result<String, ControllerError> {
        let plain_http = self.settings.plain_http;
        let verify = self.settings.verify.clone();
        let image_s = image.to_string();
        blocking(move || {
            let r: ImageRef = image_s.parse().map_err(|e: oci::OciError| e.to_string())?;
            let resolved = oci::resolve(
                &r,
                &ResolveOptions {
                    plain_http,
                    verify,
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
            Ok(resolved
                .manifest_digest
                .map(|d| d.to_string())
                .or_else(|| resolved.config_digest.map(|d| format!("config:{d}")))
                .unwrap_or_else(|| image_s.clone()))
        })
        .await
        .map_err(|message: String| ControllerError::Image {
            image: image.to_string(),
            message,
        })
    }

    /// Runs (or, after a crash, re-runs) node `hostname`'s provisioning.
    pub async fn provision(&self, hostname: &str) -> Result<NodeRow, ControllerError> {
        let (_held, node) = self.locked(hostname).await?;
        // Whatever an earlier, killed run left is undone first: each step then starts clean.
        self.undo(&node).await?;
        match self.steps(&node).await {
            Ok(()) => {
                crash_point("controller-ready");
                self.db.set_state(hostname, state::READY, "").await?;
            }
            Err((step, cause)) => {
                let undone = self.undo(&node).await;
                let mut reason = format!("step {step}: {cause}");
                if let Err(e) = undone {
                    reason.push_str(&format!("; undoing it failed too: {e}"));
                }
                self.db.set_state(hostname, state::FAILED, &reason).await?;
                return Err(ControllerError::Step {
                    node: hostname.into(),
                    step,
                    cause,
                });
            }
        }
        self.existing(hostname).await
    }

    async fn steps(&self, node: &NodeRow) -> Result<(), (&'static str, String)> {
        let h = node.hostname.clone();
        // The golden LUN is shared by every node of the digest and kept: not journaled.
        let (storage, image, digest) = (
            self.storage.clone(),
            node.image.clone(),
            node.digest.clone(),
        );
        let (plain_http, lun_mb) = (self.settings.plain_http, self.settings.lun_mb);
        let verify = self.settings.verify.clone();
        let golden =
            blocking(move || storage.ensure_golden(&image, &digest, plain_http, verify, lun_mb))
                .await
                .map_err(|e| ("golden", e.to_string()))?;
        let version = golden.version.clone();
        self.db
            .set_image(&h, &node.image, &node.digest, &version)
            .await
            .map_err(|e| ("golden", e.to_string()))?;

        let lun = self.storage.lun(&h);
        self.journal(&h, STEP_LUN, &lun.display().to_string())
            .await?;
        crash_point("controller-lun");
        let (storage, host, path) = (self.storage.clone(), h.clone(), golden.path.clone());
        let kind = blocking(move || storage.clone_lun(&path, &host))
            .await
            .map_err(|e| (STEP_LUN, e.to_string()))?;
        if kind == CloneKind::Copy {
            eprintln!(
                "terra serve: node {h}: {} cannot share blocks (not btrfs or XFS): its LUN is a full copy",
                self.storage.root.display()
            );
        }

        self.journal(&h, STEP_TARGET, &node.tid.to_string()).await?;
        crash_point("controller-target");
        let (tgt, n) = (self.tgt.clone(), node.clone());
        let lun_path = lun.clone();
        blocking(move || apply_target(&tgt, &n, &lun_path))
            .await
            .map_err(|e| (STEP_TARGET, e.to_string()))?;

        let mac = node.mac.replace(':', "-");
        self.journal(&h, STEP_ENTRY, &mac).await?;
        crash_point("controller-entry");
        let mac_t = terra_builder::bootargs::Mac::parse(&node.mac)
            .ok_or((STEP_ENTRY, format!("MAC {} does not parse", node.mac)))?;
        let cpio = boot::node_cpio(&self.boot_config(node), &node.report_token)
            .map_err(|e| (STEP_ENTRY, e.to_string()))?;
        let pxelinux = boot::pxelinux_entry(&h, &mac_t, &self.settings.cmdline);
        let storage = self.storage.clone();
        blocking(move || storage.write_entry(&mac, &pxelinux, &cpio))
            .await
            .map_err(|e| (STEP_ENTRY, e.to_string()))?;
        Ok(())
    }

    async fn journal(
        &self,
        h: &str,
        step: &'static str,
        detail: &str,
    ) -> Result<(), (&'static str, String)> {
        self.db
            .journal(h, step, detail)
            .await
            .map_err(|e| (step, e.to_string()))
    }

    /// The node.toml node `node` boots with.
    pub fn boot_config(&self, node: &NodeRow) -> String {
        let chap: Option<Chap> = serde_json::from_str(&node.chap).ok();
        node::boot_config(
            &node.config,
            &node.hostname,
            &node.mac,
            &node.initiator,
            &node.portal,
            chap.as_ref(),
            (!node.report_token.is_empty() && !self.settings.report_url.is_empty())
                .then_some(self.settings.report_url.as_str()),
        )
    }

    /// Undoes node `node`'s journal in reverse, dropping each entry once undone.
    async fn undo(&self, node: &NodeRow) -> Result<(), ControllerError> {
        let mut steps = self.db.steps(&node.hostname).await?;
        steps.reverse();
        for s in steps {
            let (storage, tgt, n, detail) = (
                self.storage.clone(),
                self.tgt.clone(),
                node.clone(),
                s.detail.clone(),
            );
            let step = s.step.clone();
            let undone: Result<(), String> = blocking(move || match step.as_str() {
                STEP_LUN => storage.remove_lun(&n.hostname).map_err(|e| e.to_string()),
                STEP_TARGET => remove_target(&tgt, &n).map_err(|e| e.to_string()),
                STEP_ENTRY => storage.remove_entry(&detail).map_err(|e| e.to_string()),
                other => Err(format!("unknown journal step {other}")),
            })
            .await;
            undone.map_err(|cause| ControllerError::Step {
                node: node.hostname.clone(),
                step: "undo",
                cause: format!("{}: {cause}", s.step),
            })?;
            self.db.unjournal(&node.hostname, s.seq).await?;
        }
        Ok(())
    }

    /// `node delete`: removes the node's entry, target and LUN, then the node.
    pub async fn delete(&self, hostname: &str) -> Result<(), ControllerError> {
        let (_held, node) = self.locked(hostname).await?;
        if node.state == state::DISK {
            // Nothing of it is held here: only its entry goes.
            self.db.delete_node(hostname).await?;
            return Ok(());
        }
        if node.controller != self.settings.id {
            return Err(ControllerError::State {
                node: hostname.into(),
                op: "delete",
                why: format!(
                    "its LUN is on controller {} (ask that one)",
                    node.controller
                ),
            });
        }
        self.db.set_state(hostname, state::DELETING, "").await?;
        crash_point("controller-deleting");
        self.undo(&node).await?;
        self.db.delete_node(hostname).await?;
        Ok(())
    }

    /// `node upgrade`: adds a version from `reference` to the node's LUN while it is off
    /// (the versions machinery: it boots tentatively next time and falls back by itself).
    pub async fn upgrade(
        &self,
        hostname: &str,
        reference: &str,
    ) -> Result<NodeRow, ControllerError> {
        self.upgrade_checked(hostname, reference, None).await
    }

    /// [`Self::upgrade`], refused when `reference` no longer resolves to `expect` (a
    /// rollout moves every node to the digest it started with, even if the tag moved).
    pub async fn upgrade_checked(
        &self,
        hostname: &str,
        reference: &str,
        expect: Option<&str>,
    ) -> Result<NodeRow, ControllerError> {
        let (_held, node) = self.locked(hostname).await?;
        let refuse = |why: String| ControllerError::State {
            node: hostname.into(),
            op: "upgrade",
            why,
        };
        if node.state == state::DISK {
            return Err(refuse(
                "it has its own disk and updates itself: start a rollout (`terra rollout start \
                 REF --nodes NAME`), which it follows with [update] source = \"controller\""
                    .into(),
            ));
        }
        if node.controller != self.settings.id {
            return Err(refuse(format!(
                "its LUN is on controller {} (ask that one)",
                node.controller
            )));
        }
        if node.state != state::READY && node.state != state::BOOTED {
            return Err(refuse(format!("it is {}", node.state)));
        }
        let tgt = self.tgt.clone();
        let tid = node.tid as u32;
        let sessions = blocking(move || tgt.targets())
            .await
            .map_err(|e| refuse(e.to_string()))?
            .into_iter()
            .find(|t| t.tid == tid)
            .map(|t| {
                t.sessions
                    .into_iter()
                    .map(|s| s.initiator)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !sessions.is_empty() {
            return Err(refuse(format!(
                "it is running ({} is logged in to its target); power it off first, or run \
                 `terra upgrade` on the node itself",
                sessions.join(", ")
            )));
        }
        let digest = self.resolve(reference).await?;
        if let Some(want) = expect.filter(|w| *w != digest) {
            return Err(refuse(format!(
                "{reference} is {digest} now, not the rollout's {want}"
            )));
        }
        let _one = self.upgrades.lock().await;
        let previous = node.state.clone();
        self.db.set_state(hostname, state::UPGRADING, "").await?;
        let lun = self.storage.lun(hostname);
        let mut spec = UpgradeSpec::new(reference);
        spec.resolve.plain_http = self.settings.plain_http;
        spec.resolve.verify = self.settings.verify.clone();
        let upgraded =
            blocking(move || versions::upgrade(&versions::Target { disks: vec![lun] }, &spec))
                .await;
        match upgraded {
            Ok(u) => {
                let name = u.name().to_string();
                self.db
                    .set_image(hostname, reference, &digest, &name)
                    .await?;
                self.db.set_state(hostname, state::READY, "").await?;
            }
            Err(e) => {
                self.db
                    .set_state(
                        hostname,
                        &previous,
                        &format!("upgrade to {reference} failed: {e}"),
                    )
                    .await?;
                return Err(ControllerError::Step {
                    node: hostname.into(),
                    step: "upgrade",
                    cause: e.to_string(),
                });
            }
        }
        self.existing(hostname).await
    }

    /// At start: finishes or undoes the work a killed controller left, then sweeps what no
    /// node owns. Returns what it did, for the log.
    pub async fn recover(&self) -> Result<Vec<String>, ControllerError> {
        let mut done = Vec::new();
        for n in self.own_nodes().await? {
            match n.state.as_str() {
                state::PROVISIONING => {
                    let r = self.provision(&n.hostname).await;
                    done.push(format!(
                        "node {}: provisioning was interrupted; {}",
                        n.hostname,
                        match r {
                            Ok(_) => "finished it".to_string(),
                            Err(e) => format!("it failed and was undone: {e}"),
                        }
                    ));
                }
                state::DELETING => {
                    self.delete(&n.hostname).await?;
                    done.push(format!("node {}: finished deleting it", n.hostname));
                }
                state::UPGRADING => {
                    // The versions machinery sweeps a half-made version when the LUN is next
                    // opened; the default is untouched until an upgrade completes.
                    self.db
                        .set_state(
                            &n.hostname,
                            state::READY,
                            "an upgrade was interrupted; the LUN boots its previous default",
                        )
                        .await?;
                    done.push(format!("node {}: an upgrade was interrupted", n.hostname));
                }
                _ => {}
            }
        }
        done.extend(self.sweep().await?);
        Ok(done)
    }

    /// The nodes whose LUNs this controller holds.
    async fn own_nodes(&self) -> Result<Vec<NodeRow>, DbError> {
        let mut nodes = self.db.nodes().await?;
        nodes.retain(|n| n.controller == self.settings.id);
        Ok(nodes)
    }

    /// Removes targets, LUN files and TFTP entries no node of this controller owns.
    pub async fn sweep(&self) -> Result<Vec<String>, ControllerError> {
        let nodes = self.own_nodes().await?;
        let (storage, tgt) = (self.storage.clone(), self.tgt.clone());
        let swept = blocking(move || sweep(&storage, &tgt, &nodes)).await;
        Ok(swept)
    }

    /// Brings tgtd back to the nodes' targets: after tgtd restarted (it keeps no state), or
    /// after the controller did. Returns the nodes whose targets were made again.
    pub async fn restore(&self) -> Result<Vec<String>, ControllerError> {
        let mut nodes = self.own_nodes().await?;
        nodes.retain(|n| {
            [state::READY, state::BOOTED, state::UPGRADING].contains(&n.state.as_str())
        });
        let (storage, tgt) = (self.storage.clone(), self.tgt.clone());
        let restored = blocking(move || -> Result<Vec<String>, TgtError> {
            let present = tgt.targets()?;
            let mut out = Vec::new();
            for n in &nodes {
                if present
                    .iter()
                    .any(|t| t.tid as i64 == n.tid && t.iqn == n.target)
                {
                    continue;
                }
                let _ = remove_target(&tgt, n);
                apply_target(&tgt, n, &storage.lun(&n.hostname))?;
                out.push(n.hostname.clone());
            }
            Ok(out)
        })
        .await
        .map_err(|e| ControllerError::Step {
            node: "*".into(),
            step: "restore",
            cause: e.to_string(),
        })?;
        Ok(restored)
    }

    /// Marks `ready` nodes whose initiator is logged in as `booted`.
    pub async fn notice_boots(&self) -> Result<Vec<String>, ControllerError> {
        let tgt = self.tgt.clone();
        let Ok(targets) = blocking(move || tgt.targets()).await else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for n in self.own_nodes().await? {
            if n.state != state::READY {
                continue;
            }
            let logged_in = targets.iter().any(|t| {
                t.tid as i64 == n.tid && t.sessions.iter().any(|s| s.initiator == n.initiator)
            });
            if logged_in
                && self
                    .db
                    .transition(&n.hostname, state::READY, state::BOOTED)
                    .await?
            {
                out.push(n.hostname.clone());
            }
        }
        Ok(out)
    }
}

/// Makes node `n`'s target on tgtd: LUN 1 on its file, only its initiator may log in, and
/// its CHAP accounts when it has them.
fn apply_target(tgt: &Tgt, n: &NodeRow, lun: &std::path::Path) -> Result<(), TgtError> {
    let tid = n.tid as u32;
    tgt.new_target(tid, &n.target)?;
    tgt.new_lun(tid, 1, lun)?;
    tgt.bind_initiator_name(tid, &n.initiator)?;
    if let Ok(c) = serde_json::from_str::<Chap>(&n.chap) {
        let _ = tgt.delete_account(&c.user);
        tgt.new_account(&c.user, &c.secret)?;
        tgt.bind_account(tid, &c.user, false)?;
        if let (Some(u), Some(s)) = (&c.mutual_user, &c.mutual_secret) {
            let _ = tgt.delete_account(u);
            tgt.new_account(u, s)?;
            tgt.bind_account(tid, u, true)?;
        }
    }
    Ok(())
}

/// Removes node `n`'s target (when it is its own) and CHAP accounts; absent ones are fine.
fn remove_target(tgt: &Tgt, n: &NodeRow) -> Result<(), TgtError> {
    let present = tgt.targets()?;
    if present
        .iter()
        .any(|t| t.tid as i64 == n.tid && t.iqn == n.target)
    {
        tgt.delete_target(n.tid as u32)?;
    }
    if let Ok(c) = serde_json::from_str::<Chap>(&n.chap) {
        let accounts = tgt.accounts()?;
        for u in std::iter::once(&c.user).chain(c.mutual_user.as_ref()) {
            if accounts.contains(u) {
                tgt.delete_account(u)?;
            }
        }
    }
    Ok(())
}

fn sweep(storage: &Storage, tgt: &Tgt, nodes: &[NodeRow]) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(targets) = tgt.targets() {
        for t in targets {
            let ours = t.iqn.starts_with(&format!("{}:target.", node::IQN_PREFIX));
            let owned = nodes
                .iter()
                .any(|n| n.tid == t.tid as i64 && n.target == t.iqn);
            if ours && !owned && tgt.delete_target(t.tid).is_ok() {
                out.push(format!(
                    "removed target {} (tid {}) that no node owns",
                    t.iqn, t.tid
                ));
            }
        }
    }
    for (host, path) in storage.lun_owners() {
        let owned = nodes.iter().any(|n| n.hostname == host);
        let partial = path.to_string_lossy().ends_with(".partial");
        if (!owned || partial) && std::fs::remove_file(&path).is_ok() {
            out.push(format!("removed {} that no node owns", path.display()));
        }
    }
    for mac in storage.entry_owners() {
        if !nodes.iter().any(|n| n.mac.replace(':', "-") == mac)
            && storage.remove_entry(&mac).is_ok()
        {
            out.push(format!("removed the TFTP entry of {mac} that no node owns"));
        }
    }
    for e in std::fs::read_dir(storage.root.join("golden"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".partial")
            && std::fs::remove_file(e.path()).is_ok()
        {
            out.push(format!(
                "removed the unfinished golden LUN {}",
                e.path().display()
            ));
        }
    }
    out
}
