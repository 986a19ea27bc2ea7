//! `terra node`: the API's client.

use std::time::Duration;

use std::collections::BTreeMap;

use crate::rollout::{RolloutView, StartRequest};
use crate::views::{DiskNodeAdded, LabelRequest, NodeDetail, NodeView, UpgradeRequest};

/// A client of one controller.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// What went wrong, with the server's own message when it sent one.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// A client of the controller at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError(format!("tokio: {e}")))?;
        terra_builder::oci::registry::ensure_tls_provider();
        let http = reqwest::Client::builder()
            // Provisioning the first node of an image installs it: minutes for a big one.
            .timeout(Duration::from_secs(1800))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            runtime,
        })
    }

    fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Option<T>, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        self.runtime.block_on(async {
            let resp = req
                .send()
                .await
                .map_err(|e| ClientError(format!("{what}: {}: {e}", self.base)))?;
            let status = resp.status();
            let body = resp
                .bytes()
                .await
                .map_err(|e| ClientError(format!("{what}: {e}")))?;
            if !status.is_success() {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Err(ClientError(format!(
                    "{what}: {msg} (HTTP {})",
                    status.as_u16()
                )));
            }
            if body.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| ClientError(format!("{what}: the controller's answer: {e}")))
        })
    }

    /// `node add`.
    pub fn add(&self, text: &str, file: &str) -> Result<NodeView, ClientError> {
        self.post_node_toml("nodes", text, file)
    }

    /// `node add --disk-node`.
    pub fn add_disk(&self, text: &str, file: &str) -> Result<DiskNodeAdded, ClientError> {
        self.post_node_toml("disk-nodes", text, file)
    }

    /// POSTs node.toml `text` (named `file`) to `/api/<what>`; the answer.
    fn post_node_toml<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        text: &str,
        file: &str,
    ) -> Result<T, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/{what}", self.base))
            .query(&[("file", file)])
            .body(text.to_string());
        self.send(req, &format!("adding {file}"))?
            .ok_or_else(|| ClientError("adding: empty answer".into()))
    }

    /// `node list`.
    pub fn list(&self) -> Result<Vec<NodeView>, ClientError> {
        let req = self.http.get(format!("{}/api/nodes", self.base));
        Ok(self.send(req, "listing nodes")?.unwrap_or_default())
    }

    /// `node show`.
    pub fn show(&self, name: &str) -> Result<NodeDetail, ClientError> {
        let req = self.http.get(format!("{}/api/nodes/{name}", self.base));
        self.send(req, &format!("node {name}"))?
            .ok_or_else(|| ClientError(format!("node {name}: empty answer")))
    }

    /// `node delete`.
    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        let req = self.http.delete(format!("{}/api/nodes/{name}", self.base));
        self.send::<serde_json::Value>(req, &format!("deleting node {name}"))
            .map(drop)
    }

    /// `node upgrade`.
    pub fn upgrade(&self, name: &str, reference: &str) -> Result<NodeView, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/nodes/{name}/upgrade", self.base))
            .json(&UpgradeRequest {
                reference: reference.to_string(),
            });
        self.send(req, &format!("upgrading node {name}"))?
            .ok_or_else(|| ClientError(format!("upgrading node {name}: empty answer")))
    }

    /// `node label`: the node's labels after the change.
    pub fn label(
        &self,
        name: &str,
        req: &LabelRequest,
    ) -> Result<BTreeMap<String, String>, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/nodes/{name}/labels", self.base))
            .json(req);
        Ok(self
            .send(req, &format!("labelling node {name}"))?
            .unwrap_or_default())
    }

    /// `rollout start`.
    pub fn start_rollout(&self, req: &StartRequest) -> Result<RolloutView, ClientError> {
        let what = format!("starting a rollout of {}", req.reference);
        let req = self
            .http
            .post(format!("{}/api/rollouts", self.base))
            .json(req);
        self.send(req, &what)?
            .ok_or_else(|| ClientError(format!("{what}: empty answer")))
    }

    /// `rollout status` of every rollout.
    pub fn rollouts(&self) -> Result<Vec<RolloutView>, ClientError> {
        let req = self.http.get(format!("{}/api/rollouts", self.base));
        Ok(self.send(req, "listing rollouts")?.unwrap_or_default())
    }

    /// `rollout status ID`.
    pub fn rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        let req = self.http.get(format!("{}/api/rollouts/{id}", self.base));
        self.send(req, &format!("rollout {id}"))?
            .ok_or_else(|| ClientError(format!("rollout {id}: empty answer")))
    }

    /// `rollout pause|resume|abort ID`.
    pub fn rollout_action(&self, id: &str, action: &str) -> Result<RolloutView, ClientError> {
        let req = self
            .http
            .post(format!("{}/api/rollouts/{id}/{action}", self.base));
        self.send(req, &format!("{action} rollout {id}"))?
            .ok_or_else(|| ClientError(format!("rollout {id}: empty answer")))
    }

    /// `node discovered`.
    pub fn discovered(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let req = self.http.get(format!("{}/api/discovered", self.base));
        Ok(self
            .send(req, "listing discovered machines")?
            .unwrap_or_default())
    }
}
