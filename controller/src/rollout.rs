//! Rollouts: move a fleet to one image digest in waves, driven by what the nodes report
//! from the boot itself.
//!
//! A rollout resolves its reference to one digest when it starts and plans its members'
//! waves ([`crate::waves`]). Each member goes `pending → waiting → upgrading → booting →
//! trial → confirmed`, or to `failed` (its boot fell back from the version, a health check
//! rejected it, or it did not confirm within the deadline), `skipped` (the digest failed on
//! it before: it is never offered again) or `aborted`. A wave starts when every member of
//! the waves before it has confirmed or failed; at most `max_unavailable` members move at
//! once; `pause_after` failures pause the rollout, naming the node and the reason stage0 or
//! `bless` reported.
//!
//! How a diskless node moves: the controller owns its LUN, but must not touch it while
//! the node runs (its root is mounted from it). A node asking for its boot script at
//! `/ipxe?mac=` is in its firmware, not using the LUN: a `waiting` member gets the version
//! added to its LUN then (the script says "asking again in 5 s" meanwhile), boots it
//! tentatively, and stage0 falls back in the same boot if it cannot. Nothing is pushed to
//! running nodes; a node that does not reboot stays `waiting`, not failed.
//!
//! Everything lives in the database; every move is conditional ([`crate::db::rollouts`]),
//! and advancing a rollout needs its lease, so a restarted controller (SIGKILL at any step)
//! continues where it was and two controllers on one PostgreSQL never move a node twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use terra_init::report::message::{Event, Message};
use terra_init::report::target::Target;

use crate::db::{now_ms, MemberRow, NodeRow, RolloutRow};
use crate::provision::{Controller, ControllerError};
use crate::waves::{self, Selector};
use terra_builder::versions::crash_point;

/// A rollout's states.
pub mod rollout_state {
    /// Offering members wave by wave.
    pub const RUNNING: &str = "running";
    /// Stopped by failures or the operator; members already moving finish.
    pub const PAUSED: &str = "paused";
    /// Stopped for good; members already moving finish.
    pub const ABORTED: &str = "aborted";
    /// Every member confirmed, failed or was skipped.
    pub const DONE: &str = "done";
}

/// A member's states (see the module's doc).
pub mod member {
    /// Its wave has not started.
    pub const PENDING: &str = "pending";
    /// Offered: it moves at its next boot (diskless) or in its window.
    pub const WAITING: &str = "waiting";
    /// The version is being added to its LUN.
    pub const UPGRADING: &str = "upgrading";
    /// The version is on its disk; its boot report is awaited.
    pub const BOOTING: &str = "booting";
    /// It booted the version on trial; its confirmation is awaited.
    pub const TRIAL: &str = "trial";
    /// It confirmed the version.
    pub const CONFIRMED: &str = "confirmed";
    /// It fell back, rejected the version, or did not confirm in time.
    pub const FAILED: &str = "failed";
    /// The digest failed on it before, or it was already moving in another rollout.
    pub const SKIPPED: &str = "skipped";
    /// The rollout was aborted before it moved.
    pub const ABORTED: &str = "aborted";
    /// States in which a member is moving (counted against `max_unavailable`).
    pub const MOVING: &[&str] = &[WAITING, UPGRADING, BOOTING, TRIAL];
    /// States a member ends in.
    pub const FINAL: &[&str] = &[CONFIRMED, FAILED, SKIPPED, ABORTED];
}

/// `POST /api/rollouts`: what `terra rollout start` asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    /// The image reference.
    pub reference: String,
    /// `all`, `NAME,…` or `label=KEY=VALUE`.
    pub nodes: String,
    /// `1,10%,50%,100%`.
    pub waves: String,
    /// At most this many members moving at once (0: the whole wave).
    pub max_unavailable: u32,
    /// Pause after this many failures.
    pub pause_after_failures: u32,
    /// `30m`.
    pub confirm_within: String,
}

/// A rollout as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    /// The rollout.
    #[serde(flatten)]
    pub rollout: RolloutRow,
    /// Members per state.
    pub counts: BTreeMap<String, u64>,
    /// The wave under way (1-based; the last one once done).
    pub wave: u64,
    /// Waves in all.
    pub waves_total: u64,
    /// The failed members, with why.
    pub failures: Vec<MemberRow>,
    /// Every member (`GET /api/rollouts/<id>` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberRow>>,
}

/// What the operator does to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop offering; members moving finish.
    Pause,
    /// Go on; failures so far no longer count towards the next pause.
    Resume,
    /// Stop for good: members not yet moving stay where they are.
    Abort,
}

impl Action {
    /// `pause`, `resume`, `abort`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }
}

/// How long one controller may advance a rollout before it must renew its lease.
const LEASE_MS: i64 = 10_000;

/// The view of `r` with `members`; `all` keeps the member list.
pub fn view(r: RolloutRow, members: Vec<MemberRow>, all: bool) -> RolloutView {
    let mut counts = BTreeMap::new();
    for m in &members {
        *counts.entry(m.state.clone()).or_insert(0) += 1;
    }
    let waves_total = members.iter().map(|m| m.wave + 1).max().unwrap_or(0) as u64;
    let wave = members
        .iter()
        .filter(|m| !member::FINAL.contains(&m.state.as_str()))
        .map(|m| m.wave as u64 + 1)
        .min()
        .unwrap_or(waves_total);
    let failures = members
        .iter()
        .filter(|m| m.state == member::FAILED)
        .cloned()
        .collect();
    RolloutView {
        rollout: r,
        counts,
        wave,
        waves_total,
        failures,
        members: all.then_some(members),
    }
}

fn plan_error(e: impl std::fmt::Display) -> ControllerError {
    ControllerError::Plan(e.to_string())
}

impl Controller {
    /// Starts a rollout: resolves the reference to one digest (and checks its signature
    /// under `--verify-key`) and plans the waves before anything is stored; an unknown
    /// node, a label no node has, or a node moving in another rollout refuse it whole.
    pub async fn start_rollout(&self, req: &StartRequest) -> Result<RolloutView, ControllerError> {
        let selector = waves::parse_selector(&req.nodes).map_err(plan_error)?;
        let wave_list = waves::parse_waves(&req.waves).map_err(plan_error)?;
        let confirm_within = waves::parse_duration(&req.confirm_within).map_err(plan_error)?;
        if req.pause_after_failures == 0 {
            return Err(plan_error("--pause-after-failures must be 1 or more"));
        }
        // The image first: an unsigned one under --verify-key is refused whatever it
        // targets, before anything is stored.
        let digest = self.resolve(&req.reference).await?;
        let nodes = self.db.nodes().await?;
        let mut targets: Vec<NodeRow> = match &selector {
            Selector::All => nodes,
            Selector::Names(names) => {
                let mut by_name: std::collections::HashMap<String, NodeRow> =
                    nodes.into_iter().map(|n| (n.hostname.clone(), n)).collect();
                let mut out = Vec::new();
                for name in names {
                    let n = by_name
                        .remove(name)
                        .ok_or_else(|| plan_error(format!("--nodes: no node named {name}")))?;
                    out.push(n);
                }
                out
            }
            Selector::Label { key, value } => {
                let labelled: std::collections::HashSet<String> = self
                    .db
                    .labels()
                    .await?
                    .into_iter()
                    .filter(|(_, k, v)| k == key && v == value)
                    .map(|(h, _, _)| h)
                    .collect();
                nodes
                    .into_iter()
                    .filter(|n| labelled.contains(&n.hostname))
                    .collect()
            }
        };
        if targets.is_empty() {
            return Err(plan_error(format!(
                "--nodes {}: no node matches",
                req.nodes
            )));
        }
        targets.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        targets.dedup_by(|a, b| a.hostname == b.hostname);
        // One query for the whole fleet, not one per node.
        let busy: BTreeMap<String, (String, String, String)> = self
            .db
            .busy_nodes()
            .await?
            .into_iter()
            .map(|(h, state, id, reference)| (h, (state, id, reference)))
            .collect();
        if let Some((n, (state, id, reference))) = targets
            .iter()
            .find_map(|n| busy.get(&n.hostname).map(|b| (n, b)))
        {
            return Err(ControllerError::RolloutState(format!(
                "node {} is {state} in rollout {id} ({reference}); abort that one first",
                n.hostname
            )));
        }
        let bad: BTreeMap<String, String> =
            self.db.bad_digest(&digest).await?.into_iter().collect();
        let lives: BTreeMap<String, crate::db::Life> = self.db.lives().await?.into_iter().collect();
        let now = now_ms();
        let wave_of = waves::assign(&wave_list, targets.len());
        let members: Vec<MemberRow> = targets
            .iter()
            .zip(wave_of)
            .map(|(n, wave)| {
                let (state, reason) = if let Some(why) = bad.get(&n.hostname) {
                    (
                        member::SKIPPED,
                        format!("{digest} failed on it before: {why}"),
                    )
                } else if lives
                    .get(&n.hostname)
                    .is_some_and(|l| l.running_digest == digest && l.last_result == "confirmed")
                {
                    (member::CONFIRMED, "it runs this digest already".to_string())
                } else {
                    (member::PENDING, String::new())
                };
                MemberRow {
                    hostname: n.hostname.clone(),
                    wave: wave as i64,
                    state: state.into(),
                    reason,
                    since: now,
                    version: String::new(),
                }
            })
            .collect();
        let id = format!(
            "r-{}",
            crate::node::random_token(6)
                .map_err(|e| plan_error(format!("random: {e}")))?
                .to_ascii_lowercase()
        );
        let r = RolloutRow {
            id: id.clone(),
            reference: req.reference.clone(),
            digest,
            selector: serde_json::to_string(&selector).unwrap_or_default(),
            waves: req.waves.clone(),
            max_unavailable: req.max_unavailable as i64,
            pause_after: req.pause_after_failures as i64,
            confirm_within: confirm_within.as_millis() as i64,
            state: rollout_state::RUNNING.into(),
            reason: String::new(),
            created: now,
            updated: now,
        };
        self.db.create_rollout(&r, &members).await?;
        self.advance(&id).await?;
        self.rollout_view(&id, false).await
    }

    /// Rollout `id` as the API shows it.
    pub async fn rollout_view(&self, id: &str, all: bool) -> Result<RolloutView, ControllerError> {
        let r = self
            .db
            .rollout(id)
            .await?
            .ok_or_else(|| ControllerError::NoRollout(id.to_string()))?;
        let members = self.db.members(id).await?;
        Ok(view(r, members, all))
    }

    /// Every rollout, newest first, without member lists.
    pub async fn rollout_views(&self) -> Result<Vec<RolloutView>, ControllerError> {
        let mut out = Vec::new();
        for r in self.db.rollouts().await? {
            let members = self.db.members(&r.id).await?;
            out.push(view(r, members, false));
        }
        Ok(out)
    }

    /// Pauses, resumes or aborts rollout `id`.
    pub async fn rollout_action(
        &self,
        id: &str,
        action: Action,
    ) -> Result<RolloutView, ControllerError> {
        let r = self
            .db
            .rollout(id)
            .await?
            .ok_or_else(|| ControllerError::NoRollout(id.to_string()))?;
        let refused = |op: &str| {
            ControllerError::RolloutState(format!("rollout {id} is {}: cannot {op} it", r.state))
        };
        match action {
            Action::Pause => {
                if !self
                    .db
                    .move_rollout(
                        id,
                        &[rollout_state::RUNNING],
                        rollout_state::PAUSED,
                        "paused by the operator",
                    )
                    .await?
                {
                    return Err(refused("pause"));
                }
            }
            Action::Resume => {
                if !self
                    .db
                    .move_rollout(id, &[rollout_state::PAUSED], rollout_state::RUNNING, "")
                    .await?
                {
                    return Err(refused("resume"));
                }
                // The failures so far were seen: the next pause counts new ones.
                self.db.acknowledge_failures(id).await?;
                self.advance(id).await?;
            }
            Action::Abort => {
                if !self
                    .db
                    .move_rollout(
                        id,
                        &[rollout_state::RUNNING, rollout_state::PAUSED],
                        rollout_state::ABORTED,
                        "aborted by the operator",
                    )
                    .await?
                {
                    return Err(refused("abort"));
                }
                for m in self.db.members(id).await? {
                    self.db
                        .move_member(
                            id,
                            &m.hostname,
                            &[member::PENDING, member::WAITING],
                            member::ABORTED,
                            "the rollout was aborted before it moved",
                            None,
                        )
                        .await?;
                }
            }
        }
        self.rollout_view(id, false).await
    }

    /// Advances every running rollout this controller can lease; returns what happened,
    /// for the log.
    pub async fn advance_all(&self) -> Result<Vec<String>, ControllerError> {
        let mut said = Vec::new();
        for r in self.db.rollouts().await? {
            if r.state == rollout_state::RUNNING {
                said.extend(self.advance(&r.id).await?);
            }
        }
        Ok(said)
    }

    /// One step of rollout `id`: deadlines, the failure threshold, the next members to
    /// offer, the end. Only under its lease.
    pub async fn advance(&self, id: &str) -> Result<Vec<String>, ControllerError> {
        let mut said = Vec::new();
        if !self
            .db
            .lease_rollout(id, &self.settings.id, LEASE_MS)
            .await?
        {
            return Ok(said);
        }
        let Some(r) = self.db.rollout(id).await? else {
            return Ok(said);
        };
        self.reconcile(&r, &self.db.members(id).await?).await?;
        let mut members = self.db.members(id).await?;
        let now = now_ms();
        for m in members.iter_mut() {
            let on_trial = m.state == member::BOOTING || m.state == member::TRIAL;
            if on_trial && now - m.since > r.confirm_within {
                let reason = format!(
                    "did not confirm {} within {} s",
                    short(&r.digest),
                    r.confirm_within / 1000
                );
                if self.fail_member(&r, m, &reason).await? {
                    m.state = member::FAILED.into();
                    m.reason = reason;
                    m.since = now;
                }
            }
        }
        if r.state != rollout_state::RUNNING {
            return Ok(said);
        }
        let counted_from = self.db.failures_counted_from(id).await?;
        let failed: Vec<&MemberRow> = members
            .iter()
            .filter(|m| m.state == member::FAILED && m.since >= counted_from)
            .collect();
        if failed.len() as i64 >= r.pause_after {
            let first = failed.iter().min_by_key(|m| m.since).expect("one failed");
            let reason = format!(
                "paused after {} failure(s): node {}: {}",
                failed.len(),
                first.hostname,
                first.reason
            );
            if self
                .db
                .move_rollout(
                    id,
                    &[rollout_state::RUNNING],
                    rollout_state::PAUSED,
                    &reason,
                )
                .await?
            {
                said.push(format!("rollout {id} {reason}"));
            }
            return Ok(said);
        }
        let Some(wave) = members
            .iter()
            .filter(|m| !member::FINAL.contains(&m.state.as_str()))
            .map(|m| m.wave)
            .min()
        else {
            if self
                .db
                .move_rollout(id, &[rollout_state::RUNNING], rollout_state::DONE, "")
                .await?
            {
                said.push(format!("rollout {id} done"));
            }
            return Ok(said);
        };
        let mut moving = members
            .iter()
            .filter(|m| member::MOVING.contains(&m.state.as_str()))
            .count() as i64;
        let limit = if r.max_unavailable > 0 {
            r.max_unavailable
        } else {
            i64::MAX
        };
        for m in members
            .iter()
            .filter(|m| m.wave == wave && m.state == member::PENDING)
        {
            if moving >= limit {
                break;
            }
            if self
                .db
                .move_member(
                    id,
                    &m.hostname,
                    &[member::PENDING],
                    member::WAITING,
                    "",
                    None,
                )
                .await?
            {
                crash_point("rollout-offered");
                moving += 1;
                said.push(format!(
                    "rollout {id}: node {} offered {} (wave {})",
                    m.hostname,
                    short(&r.digest),
                    wave + 1
                ));
            }
        }
        Ok(said)
    }

    /// Marks member `m` of `r` failed (from a moving state) and remembers the digest failed
    /// on that node; whether this call did it.
    async fn fail_member(
        &self,
        r: &RolloutRow,
        m: &MemberRow,
        reason: &str,
    ) -> Result<bool, ControllerError> {
        let moved = self
            .db
            .move_member(
                &r.id,
                &m.hostname,
                member::MOVING,
                member::FAILED,
                reason,
                None,
            )
            .await?;
        if moved {
            self.db
                .add_bad_digest(&m.hostname, &r.digest, reason)
                .await?;
        }
        Ok(moved)
    }

    /// What node `hostname`'s report means for the rollouts it is moving in: the digest
    /// booted on trial, confirmed, rejected, or a boot that fell back from it. A failure
    /// is acted on at once (the rollout pauses in the same request).
    pub async fn on_report(&self, hostname: &str, m: &Message) -> Result<(), ControllerError> {
        for (r, mem) in self.db.memberships(hostname, member::MOVING).await? {
            if self.apply(&r, &mem, m).await? {
                for line in self.advance(&r.id).await? {
                    eprintln!("terra serve: {line}");
                }
            }
        }
        Ok(())
    }

    /// Moves `mem` as [`judge`] says report `m` means; whether it moved.
    async fn apply(
        &self,
        r: &RolloutRow,
        mem: &MemberRow,
        m: &Message,
    ) -> Result<bool, ControllerError> {
        match judge(r, mem, m) {
            None => Ok(false),
            Some((member::FAILED, reason)) => self.fail_member(r, mem, &reason).await,
            Some((to, reason)) => {
                // A node that applied the version itself names it, as the controller does
                // for a LUN it upgraded: a boot that falls back from it is then told apart.
                let version = (m.event == Event::Applied)
                    .then(|| m.version.as_ref().map(|v| v.name.as_str()))
                    .flatten();
                Ok(self
                    .db
                    .move_member(&r.id, &mem.hostname, member::MOVING, to, &reason, version)
                    .await?)
            }
        }
    }

    /// What node `hostname`, which updates itself, should run now (`GET /v1/target`): the
    /// image and digest of the running rollout it is moving in; None when none moves it
    /// (it stays on what it runs).
    pub async fn target_for(&self, hostname: &str) -> Result<Option<Target>, ControllerError> {
        let found = self
            .db
            .memberships(hostname, &[member::WAITING, member::BOOTING, member::TRIAL])
            .await?
            .into_iter()
            .find(|(r, _)| r.state == rollout_state::RUNNING);
        Ok(found.map(|(r, _)| Target {
            image: r.reference,
            digest: r.digest,
            rollout: r.id,
        }))
    }

    /// Reports stored while no one acted on them (a controller killed between storing a
    /// report and moving the member): members booting or on trial are judged again on
    /// their node's events since they entered their state.
    async fn reconcile(
        &self,
        r: &RolloutRow,
        members: &[MemberRow],
    ) -> Result<(), ControllerError> {
        for mem in members
            .iter()
            .filter(|m| m.state == member::BOOTING || m.state == member::TRIAL)
        {
            let mut events = self.db.events(&mem.hostname, 8).await?;
            events.retain(|e| e.received >= mem.since);
            events.reverse();
            for e in events {
                if let Ok(m) = serde_json::from_value::<Message>(e.report) {
                    if self.apply(r, mem, &m).await? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Node `node` asks for its boot script: when it is `waiting` in a running rollout and
    /// its LUN is this controller's, the version is added to the LUN now, in the
    /// background (the node is in its firmware, not using the LUN). Whether an upgrade
    /// started (the node is told to ask again shortly).
    pub async fn on_ipxe(self: &Arc<Self>, node: &NodeRow) -> Result<bool, ControllerError> {
        if node.controller != self.settings.id {
            return Ok(false);
        }
        let Some((r, _)) = self
            .db
            .memberships(&node.hostname, &[member::WAITING])
            .await?
            .into_iter()
            .find(|(r, _)| r.state == rollout_state::RUNNING)
        else {
            return Ok(false);
        };
        if !self
            .db
            .move_member(
                &r.id,
                &node.hostname,
                &[member::WAITING],
                member::UPGRADING,
                "",
                None,
            )
            .await?
        {
            return Ok(false);
        }
        crash_point("rollout-upgrading");
        let ctl = self.clone();
        let host = node.hostname.clone();
        tokio::spawn(async move {
            let done = ctl
                .upgrade_checked(&host, &r.reference, Some(&r.digest))
                .await;
            crash_point("rollout-upgraded");
            let moved = match done {
                Ok(n) => ctl
                    .db
                    .move_member(
                        &r.id,
                        &host,
                        &[member::UPGRADING],
                        member::BOOTING,
                        "",
                        Some(&n.version),
                    )
                    .await
                    .map(drop),
                Err(e) => {
                    eprintln!("terra serve: rollout {}: node {host}: {e}", r.id);
                    ctl.db
                        .move_member(
                            &r.id,
                            &host,
                            &[member::UPGRADING],
                            member::FAILED,
                            &format!("the upgrade of its LUN failed: {e}"),
                            None,
                        )
                        .await
                        .map(drop)
                }
            };
            if let Err(e) = moved {
                eprintln!("terra serve: rollout {}: node {host}: {e}", r.id);
            }
        });
        Ok(true)
    }

    /// At start: members a killed controller left `upgrading` on its LUNs wait again (the
    /// node's own recovery finished or undid the upgrade; the next boot script retries).
    pub async fn recover_rollouts(&self) -> Result<Vec<String>, ControllerError> {
        let mut said = Vec::new();
        let own: std::collections::HashSet<String> = self
            .db
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.controller == self.settings.id)
            .map(|n| n.hostname)
            .collect();
        for r in self.db.rollouts().await? {
            for m in self.db.members(&r.id).await? {
                if m.state == member::UPGRADING
                    && own.contains(&m.hostname)
                    && self
                        .db
                        .move_member(
                            &r.id,
                            &m.hostname,
                            &[member::UPGRADING],
                            member::WAITING,
                            "",
                            None,
                        )
                        .await?
                {
                    said.push(format!(
                        "rollout {}: node {}'s upgrade was interrupted; it waits for its next boot again",
                        r.id, m.hostname
                    ));
                }
            }
        }
        Ok(said)
    }
}

/// What report `m` means for member `mem` of rollout `r`: its next state and why, or
/// None when the report says nothing about the rollout. The digest booted tentatively puts
/// it on trial; booted as the default or confirmed, it is confirmed; rejected, it failed
/// with the booted system's reason; and a boot of anything else once the version is on
/// its disk failed with the fallback's reason stage0 gave.
pub fn judge(r: &RolloutRow, mem: &MemberRow, m: &Message) -> Option<(&'static str, String)> {
    let v = m.version.as_ref()?;
    let ours = !v.digest.is_empty() && v.digest == r.digest;
    let after_upgrade = mem.state == member::BOOTING || mem.state == member::TRIAL;
    match m.event {
        // The node applied it itself (`terra update`) and restarts into it.
        Event::Applied if ours && mem.state == member::WAITING => {
            Some((member::BOOTING, String::new()))
        }
        Event::Applied => None,
        Event::Boot if ours && v.tentative => Some((member::TRIAL, String::new())),
        Event::Boot | Event::Confirmed if ours => Some((member::CONFIRMED, String::new())),
        Event::Rejected if ours => Some((
            member::FAILED,
            format!(
                "rejected: {}",
                m.reason
                    .as_deref()
                    .unwrap_or("rejected by the booted system")
            ),
        )),
        Event::Boot if after_upgrade => {
            let fell = v
                .fallbacks
                .iter()
                .find(|f| !mem.version.is_empty() && f.name == mem.version)
                .or(v.fallbacks.first());
            Some((
                member::FAILED,
                match fell {
                    Some(f) => format!("fell back from {} ({}): {}", f.name, f.why, f.reason),
                    None => format!(
                        "booted {} ({}) instead of {}",
                        v.name,
                        short(&v.digest),
                        short(&r.digest)
                    ),
                },
            ))
        }
        _ => None,
    }
}

/// A digest for messages: `sha256:` and 12 hex digits.
fn short(d: &str) -> &str {
    short_digest(d)
}

/// `sha256:0123456789ab…` as `sha256:0123456789ab` (12 hex digits name an image well
/// enough on one line).
pub fn short_digest(d: &str) -> &str {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => &d[..alg.len() + 1 + 12],
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terra_init::report::message::{Fallback, Version};

    fn rollout() -> RolloutRow {
        RolloutRow {
            id: "r-1".into(),
            reference: "os:v3".into(),
            digest: "sha256:33".into(),
            selector: String::new(),
            waves: "100%".into(),
            max_unavailable: 0,
            pause_after: 1,
            confirm_within: 60_000,
            state: rollout_state::RUNNING.into(),
            reason: String::new(),
            created: 0,
            updated: 0,
        }
    }

    fn member(state: &str) -> MemberRow {
        MemberRow {
            hostname: "n1".into(),
            wave: 0,
            state: state.into(),
            reason: String::new(),
            since: 0,
            version: "v3".into(),
        }
    }

    fn report(event: Event, digest: &str, tentative: bool, fallbacks: Vec<Fallback>) -> Message {
        Message {
            event,
            hostname: "n1".into(),
            boot_id: "b".into(),
            sent_by: "stage0".into(),
            version: Some(Version {
                name: if digest == "sha256:33" { "v3" } else { "v2" }.into(),
                digest: digest.into(),
                tentative,
                fallbacks,
                ..Default::default()
            }),
            reason: Some("health check 10-x failed: exit status 1".into()),
            phases: Vec::new(),
            initramfs_ms: 0.0,
            uptime_at_start_ms: 0.0,
        }
    }

    #[test]
    fn reports_move_members_as_the_boot_went() {
        let r = rollout();
        let booting = member(member::BOOTING);
        let on = |m: &Message, mem: &MemberRow| judge(&r, mem, m);
        assert_eq!(
            on(&report(Event::Boot, "sha256:33", true, vec![]), &booting),
            Some((member::TRIAL, String::new()))
        );
        assert_eq!(
            on(
                &report(Event::Confirmed, "sha256:33", true, vec![]),
                &member(member::TRIAL)
            )
            .map(|x| x.0),
            Some(member::CONFIRMED)
        );
        let (s, why) = on(
            &report(Event::Rejected, "sha256:33", true, vec![]),
            &booting,
        )
        .unwrap();
        assert_eq!(s, member::FAILED);
        assert!(why.starts_with("rejected: health check 10-x"), "{why}");
        let fell = Fallback {
            name: "v3".into(),
            why: "tentative".into(),
            reason: "no /bin/node-init in the version".into(),
        };
        let (s, why) = on(
            &report(Event::Boot, "sha256:22", false, vec![fell]),
            &booting,
        )
        .unwrap();
        assert_eq!(s, member::FAILED);
        assert_eq!(
            why,
            "fell back from v3 (tentative): no /bin/node-init in the version"
        );
        // A waiting node booting its old version says nothing: it has not moved yet.
        assert_eq!(
            on(
                &report(Event::Boot, "sha256:22", false, vec![]),
                &member(member::WAITING)
            ),
            None
        );
        // Another digest's rejection is not this rollout's.
        assert_eq!(
            on(
                &report(Event::Rejected, "sha256:22", true, vec![]),
                &booting
            ),
            None
        );
    }

    #[test]
    fn a_node_that_applies_the_version_itself_is_then_judged_by_its_boot() {
        let r = rollout();
        let applied = report(Event::Applied, "sha256:33", true, vec![]);
        // Waiting → booting (the node's own `terra update` applied it and restarts).
        assert_eq!(
            judge(&r, &member(member::WAITING), &applied),
            Some((member::BOOTING, String::new()))
        );
        // Said again later, or of another digest, it moves nothing.
        for state in [member::BOOTING, member::TRIAL, member::CONFIRMED] {
            assert_eq!(judge(&r, &member(state), &applied), None, "{state}");
        }
        let other = report(Event::Applied, "sha256:22", true, vec![]);
        assert_eq!(judge(&r, &member(member::WAITING), &other), None);
    }
}
