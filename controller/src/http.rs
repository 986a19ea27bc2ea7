//! The HTTP side: boot endpoints (open: machines ask before they have any credential) and
//! the JSON API under `/api` (changes need the token).
//!
//! ```text
//! GET  /boot.ipxe                    chains to /ipxe?mac=${mac:hexhyp}
//! GET  /ipxe?mac=52-54-00-…          the node's script, or the default one (recorded)
//! GET  /nodes/<mac>/node.cpio        the node's own initramfs (its node.toml)
//! GET  /assets/vmlinuz, /assets/initrd.img   shared kernel and initramfs (range requests)
//! GET  /api/nodes[/<name>]   POST /api/nodes   DELETE /api/nodes/<name>
//! POST /api/nodes/<name>/upgrade     GET /api/discovered   GET /api/health
//! POST /api/nodes/<name>/labels      GET|POST /api/rollouts   GET /api/rollouts/<id>
//! POST /api/rollouts/<id>/pause|resume|abort
//! POST /v1/reports                   a node's boot report (its own token; 8 KiB at most)
//! GET  /fleet, /fleet/nodes/<name>   the fleet page (the token: bearer, or ?token= once)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service, post};
use axum::{Json, Router};
use serde::Deserialize;
use terra_builder::bootargs::Mac;
use terra_init::report::http::{MAX_BODY, REPORTS_PATH};
use terra_init::report::message::Message;
use terra_init::report::target::{Answer, TARGET_PATH};
use tower_http::services::ServeFile;

use crate::boot;
use crate::db::{Incoming, Life, NodeRow};
use crate::provision::{state, Controller, ControllerError};
use crate::rollout::{Action, RolloutView, StartRequest};
pub use crate::views::{DiskNodeAdded, LabelRequest, NodeDetail, NodeView, UpgradeRequest};

/// What the HTTP handlers share.
pub struct App {
    /// The controller.
    pub ctl: Arc<Controller>,
    /// The token changes need.
    pub token: String,
    /// Where nodes reach this server.
    pub public_url: String,
    /// The shared kernel.
    pub kernel: PathBuf,
    /// The shared initramfs.
    pub initramfs: PathBuf,
    /// Where boot reports go into the database (in batches).
    pub reports: crate::reports::Sink,
}

/// An API error: a status and a message naming the node, step and cause.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        let status = match &e {
            ControllerError::Spec(_) | ControllerError::Image { .. } | ControllerError::Plan(_) => {
                StatusCode::BAD_REQUEST
            }
            ControllerError::Taken { .. }
            | ControllerError::State { .. }
            | ControllerError::RolloutState(_) => StatusCode::CONFLICT,
            ControllerError::NoNode(_) | ControllerError::NoRollout(_) => StatusCode::NOT_FOUND,
            ControllerError::Step { .. } | ControllerError::Db(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot_ipxe))
        .route("/ipxe", get(ipxe))
        .route("/nodes/{mac}/node.cpio", get(node_cpio))
        .route_service(boot::KERNEL_PATH, get_service(ServeFile::new(&app.kernel)))
        .route_service(
            boot::INITRD_PATH,
            get_service(ServeFile::new(&app.initramfs)),
        )
        .route("/api/health", get(health))
        .route("/api/nodes", get(list).post(add))
        .route("/api/disk-nodes", post(add_disk))
        .route("/api/nodes/{name}", get(show).delete(delete))
        .route("/api/nodes/{name}/upgrade", post(upgrade))
        .route("/api/discovered", get(discovered))
        .route("/api/nodes/{name}/labels", post(label))
        .route("/fleet", get(fleet_page))
        .route("/fleet/nodes/{name}", get(node_page))
        .route("/api/rollouts", get(rollouts).post(start_rollout))
        .route("/api/rollouts/{id}", get(rollout))
        .route("/api/rollouts/{id}/{action}", post(rollout_action))
        .route(
            REPORTS_PATH,
            post(report).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route(TARGET_PATH, get(target))
        .with_state(app)
}

fn ipxe_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn boot_ipxe(State(app): State<Arc<App>>) -> Response {
    ipxe_text(boot::chain_script(&app.public_url))
}

#[derive(Deserialize)]
struct MacQuery {
    mac: String,
}

async fn ipxe(
    State(app): State<Arc<App>>,
    Query(q): Query<MacQuery>,
) -> Result<Response, ApiError> {
    let mac = Mac::parse(&q.mac).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("mac={:?}: not a MAC address", q.mac),
        )
    })?;
    let cmdline = &app.ctl.settings.cmdline;
    let node = app
        .ctl
        .db
        .node_by_mac(&mac.to_string())
        .await
        .map_err(internal)?;
    let Some(n) = node else {
        app.ctl
            .db
            .discovered(&mac.to_string())
            .await
            .map_err(internal)?;
        return Ok(ipxe_text(boot::default_script(
            &app.public_url,
            &mac.to_string(),
            cmdline,
        )));
    };
    // A node waiting in a rollout is in its firmware now: its LUN gets the version.
    if app.ctl.on_ipxe(&n).await? {
        return Ok(ipxe_text(format!(
            "#!ipxe\necho Terra: node {} gets its rollout's version now; asking again in 5 s\n\
             sleep 5\nchain {}/ipxe?mac=${{mac:hexhyp}}\n",
            n.hostname,
            app.public_url.trim_end_matches('/')
        )));
    }
    let script = match n.state.as_str() {
        state::READY | state::BOOTED => {
            boot::node_script(&app.public_url, &n.hostname, &mac, cmdline)
        }
        state::FAILED => format!(
            "#!ipxe\necho Terra: node {} failed: {}\nexit 1\n",
            n.hostname,
            n.reason.replace(['\n', '$'], " ")
        ),
        // Provisioning, upgrading or deleting: ask again shortly.
        other => format!(
            "#!ipxe\necho Terra: node {} is {other}; asking again in 5 s\nsleep 5\n\
             chain {}/ipxe?mac=${{mac:hexhyp}}\n",
            n.hostname,
            app.public_url.trim_end_matches('/')
        ),
    };
    Ok(ipxe_text(script))
}

async fn node_cpio(
    State(app): State<Arc<App>>,
    Path(mac): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Mac::parse(&mac).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{mac:?}: not a MAC address"),
        )
    })?;
    let mut n = app
        .ctl
        .db
        .node_by_mac(&parsed.to_string())
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node has MAC {parsed}")))?;
    if n.report_token.is_empty() {
        // Added before boot reports existed: it gets its token now.
        let fresh = crate::node::random_token(32).map_err(internal)?;
        n.report_token = app
            .ctl
            .db
            .ensure_report_token(&n.hostname, &fresh)
            .await
            .map_err(internal)?;
    }
    let bytes = boot::node_cpio(&app.ctl.boot_config(&n), &n.report_token).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("node {}: {e}", n.hostname),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Whether `given` is the controller's token (constant time; an empty token matches
/// nothing).
fn is_token(app: &App, given: &str) -> bool {
    let (a, b) = (given.as_bytes(), app.token.as_bytes());
    !b.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fleet page's cookie: the token, set once the page was opened with `?token=`.
const PAGE_COOKIE: &str = "terra_token";

/// The fleet page is read behind the token: a bearer header or the page's cookie.
fn page_authorized(app: &App, headers: &HeaderMap) -> bool {
    if is_token(app, bearer(headers)) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == PAGE_COOKIE && is_token(app, v))
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn page_refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        html(
            "<!doctype html><title>Terra fleet</title><p>The fleet page needs the controller's token: open <code>/fleet?token=…</code> once."
                .into(),
        ),
    )
        .into_response()
}

/// `GET /fleet[?token=…]`: with the token in the query, it is moved into an HttpOnly
/// cookie for the page and the address loses it (a redirect).
async fn fleet_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    if let Some(t) = q.token.filter(|t| is_token(&app, t)) {
        return Ok((
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/fleet".to_string()),
                (
                    header::SET_COOKIE,
                    format!("{PAGE_COOKIE}={t}; Path=/fleet; HttpOnly; SameSite=Strict"),
                ),
            ],
        )
            .into_response());
    }
    if !page_authorized(&app, &headers) {
        return Ok(page_refused());
    }
    let Json(nodes) = list(State(app.clone())).await?;
    let rollouts = app.ctl.rollout_views().await?;
    Ok(html(crate::page::fleet(
        &nodes,
        &rollouts,
        crate::db::now_ms(),
    )))
}

/// `GET /fleet/nodes/<name>`.
async fn node_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if !page_authorized(&app, &headers) {
        return Ok(page_refused());
    }
    let Json(d) = show(State(app.clone()), Path(name)).await?;
    Ok(html(crate::page::node(&d, crate::db::now_ms())))
}

/// Changes need `Authorization: Bearer <token>`; compared in constant time.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_token(app, bearer(headers)) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "changes need the controller's token (TERRA_TOKEN or --token-file)".into(),
        ))
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    Json(serde_json::json!({
        "controller": app.ctl.settings.id,
        "database": app.ctl.db.backend,
    }))
    .into_response()
}

async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<NodeView>>, ApiError> {
    let nodes = app.ctl.db.nodes().await.map_err(internal)?;
    let mut lives: std::collections::HashMap<String, Life> = app
        .ctl
        .db
        .lives()
        .await
        .map_err(internal)?
        .into_iter()
        .collect();
    Ok(Json(
        nodes
            .iter()
            .map(|n| NodeView {
                life: lives.remove(&n.hostname).unwrap_or_default(),
                ..NodeView::from(n)
            })
            .collect(),
    ))
}

/// Events `GET /api/nodes/<name>` shows.
const SHOWN_EVENTS: i64 = 20;

async fn show(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<NodeDetail>, ApiError> {
    let n = app
        .ctl
        .db
        .node(&name)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::from(ControllerError::NoNode(name.clone())))?;
    let life = app
        .ctl
        .db
        .life(&name)
        .await
        .map_err(internal)?
        .unwrap_or_default();
    let events = app
        .ctl
        .db
        .events(&name, SHOWN_EVENTS)
        .await
        .map_err(internal)?;
    Ok(Json(NodeDetail {
        node: NodeView {
            life,
            ..NodeView::from(&n)
        },
        events,
    }))
}

/// `POST /v1/reports`: a node's boot report. The bearer token names the node, and the
/// report must be that node's own; a report another node's token carries, a malformed or
/// an oversized one (refused by the body limit: 413) changes nothing.
async fn report(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let node = node_of(&app, &headers, "report").await?;
    let m = Message::parse(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("node {}: {e}", node.hostname),
        )
    })?;
    if m.hostname != node.hostname {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "report for node {:?} carries node {}'s token: a node reports only for itself",
                m.hostname, node.hostname
            ),
        ));
    }
    let text = String::from_utf8_lossy(&body);
    let result = m.result().to_string();
    app.reports
        .submit(Incoming {
            hostname: node.hostname,
            message: m,
            text: text.into_owned(),
            result,
        })
        .await
        .map_err(internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The node a request's bearer token names: 401 when none has it.
async fn node_of(app: &App, headers: &HeaderMap, what: &str) -> Result<NodeRow, ApiError> {
    app.ctl
        .db
        .node_by_token(bearer(headers))
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                format!("{what} refused: no node has this report token"),
            )
        })
}

/// `GET /v1/target`: the image a node that updates itself (`[update] source =
/// "controller"`) should run now, by the token that names it; `{"target": null}` when no
/// running rollout moves it.
async fn target(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Answer>, ApiError> {
    let node = node_of(&app, &headers, "target request").await?;
    Ok(Json(Answer {
        target: app.ctl.target_for(&node.hostname).await?,
    }))
}

/// The bearer token of a request ("" when none).
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

#[derive(Deserialize)]
struct AddQuery {
    /// The node.toml's file name, for messages.
    file: Option<String>,
}

/// A node.toml sent to be added: its name for messages and its text.
fn node_toml(q: AddQuery, body: &Bytes) -> Result<(String, String), ApiError> {
    let file = q.file.unwrap_or_else(|| "node.toml".into());
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{file}: not UTF-8")))?;
    Ok((file, text))
}

async fn add(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<AddQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<NodeView>), ApiError> {
    authorize(&app, &headers)?;
    let (file, text) = node_toml(q, &body)?;
    let n = app.ctl.add(&text, &file).await?;
    Ok((StatusCode::CREATED, Json(NodeView::from(&n))))
}

/// `POST /api/disk-nodes`: a node with its own disk (`node add --disk-node`); the answer
/// carries its token, shown this once.
async fn add_disk(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<AddQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<DiskNodeAdded>), ApiError> {
    authorize(&app, &headers)?;
    let (file, text) = node_toml(q, &body)?;
    let n = app.ctl.add_disk(&text, &file).await?;
    Ok((
        StatusCode::CREATED,
        Json(DiskNodeAdded {
            node: NodeView::from(&n),
            url: app.public_url.trim_end_matches('/').to_string(),
            token: n.report_token,
        }),
    ))
}

async fn delete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers)?;
    app.ctl.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<UpgradeRequest>,
) -> Result<Json<NodeView>, ApiError> {
    authorize(&app, &headers)?;
    let n = app.ctl.upgrade(&name, &req.reference).await?;
    Ok(Json(NodeView::from(&n)))
}

async fn discovered(
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<crate::db::Discovered>>, ApiError> {
    Ok(Json(app.ctl.db.discoveries().await.map_err(internal)?))
}

async fn label(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<LabelRequest>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    authorize(&app, &headers)?;
    if app.ctl.db.node(&name).await.map_err(internal)?.is_none() {
        return Err(ControllerError::NoNode(name).into());
    }
    let mut changes = Vec::new();
    for (k, v) in &req.set {
        crate::waves::check_label(k, v)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("node {name}: {e}")))?;
        changes.push((k.clone(), Some(v.clone())));
    }
    changes.extend(req.remove.iter().map(|k| (k.clone(), None)));
    app.ctl
        .db
        .set_labels(&name, &changes)
        .await
        .map_err(internal)?;
    let labels = app.ctl.db.labels().await.map_err(internal)?;
    Ok(Json(
        labels
            .into_iter()
            .filter(|(h, _, _)| *h == name)
            .map(|(_, k, v)| (k, v))
            .collect(),
    ))
}

async fn rollouts(State(app): State<Arc<App>>) -> Result<Json<Vec<RolloutView>>, ApiError> {
    Ok(Json(app.ctl.rollout_views().await?))
}

async fn rollout(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(app.ctl.rollout_view(&id, true).await?))
}

async fn start_rollout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    authorize(&app, &headers)?;
    Ok((
        StatusCode::CREATED,
        Json(app.ctl.start_rollout(&req).await?),
    ))
}

async fn rollout_action(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    authorize(&app, &headers)?;
    let a = Action::parse(&action).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("{action:?}: a rollout can be paused, resumed or aborted"),
        )
    })?;
    Ok(Json(app.ctl.rollout_action(&id, a).await?))
}
