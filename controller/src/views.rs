//! What the API answers and takes, as JSON: nodes (never their node.toml or secrets), a
//! node with its events, label and upgrade requests. Types only; `http.rs` serves them,
//! `client.rs`, `life.rs` and `page.rs` read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{EventRow, Life, NodeRow};
use crate::provision::state::DISK;

/// A node as the API shows it: never its node.toml or CHAP secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// Hostname.
    pub hostname: String,
    /// MAC.
    pub mac: String,
    /// Image reference.
    pub image: String,
    /// Default root version on its LUN.
    pub version: String,
    /// Initiator IQN.
    pub initiator: String,
    /// Target IQN.
    pub target: String,
    /// Lifecycle state.
    pub state: String,
    /// Why it failed.
    #[serde(default)]
    pub reason: String,
    /// Portal of its target.
    #[serde(default)]
    pub portal: String,
    /// Image digest.
    #[serde(default)]
    pub digest: String,
    /// Controller holding its LUN.
    #[serde(default)]
    pub controller: String,
    /// Whether it logs in with CHAP.
    #[serde(default)]
    pub chap: bool,
    /// What it last reported.
    #[serde(flatten, default)]
    pub life: Life,
}

/// `GET /api/nodes/<name>`: the node and its recent events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeDetail {
    /// The node.
    #[serde(flatten)]
    pub node: NodeView,
    /// Its boots, confirmations and rejections.
    #[serde(default)]
    pub events: Vec<EventRow>,
}

impl From<&NodeRow> for NodeView {
    fn from(n: &NodeRow) -> Self {
        // A node with its own disk has no MAC, initiator or target (the row holds
        // placeholders there).
        let diskless = |v: &String| {
            if n.state == DISK {
                String::new()
            } else {
                v.clone()
            }
        };
        NodeView {
            hostname: n.hostname.clone(),
            mac: diskless(&n.mac),
            image: n.image.clone(),
            version: n.version.clone(),
            initiator: diskless(&n.initiator),
            target: diskless(&n.target),
            state: n.state.clone(),
            reason: n.reason.clone(),
            portal: n.portal.clone(),
            digest: n.digest.clone(),
            controller: n.controller.clone(),
            chap: !n.chap.is_empty(),
            life: Life::default(),
        }
    }
}

/// `POST /api/disk-nodes`'s answer: the node, and what its node.toml needs to report and
/// to follow rollouts (`[controller] url` and the token, shown only here, once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskNodeAdded {
    /// The node.
    pub node: NodeView,
    /// The controller's URL as nodes reach it (`[controller] url`).
    pub url: String,
    /// The node's token (its `[controller] token_file`).
    pub token: String,
}

#[derive(Deserialize, Serialize)]
/// `POST /api/nodes/<name>/upgrade`'s body.
pub struct UpgradeRequest {
    /// The image reference.
    pub reference: String,
}

/// `POST /api/nodes/<name>/labels`'s body: labels to set and keys to remove.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelRequest {
    /// KEY → VALUE.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}
