//! The controller's state: one schema on SQLite (a file under the state directory, the
//! embedded default) or PostgreSQL (several controllers sharing one database), through
//! sqlx's Any driver. Every change is a transaction; the schema has numbered migrations.
//!
//! Only portable SQL is used: TEXT and BIGINT columns, `$n` placeholders (SQLite accepts
//! them as numbered parameters), no autoincrement (a node's key is its hostname).

mod rollouts;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use terra_init::report::message::{Event, Message};

pub use rollouts::{MemberRow, RolloutRow};

/// Migrations, in order: each is applied once, in a transaction, and recorded in
/// `terra_schema`.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE nodes (
        hostname TEXT PRIMARY KEY,
        mac TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        digest TEXT NOT NULL,
        version TEXT NOT NULL,
        initiator TEXT NOT NULL UNIQUE,
        target TEXT NOT NULL UNIQUE,
        portal TEXT NOT NULL,
        controller TEXT NOT NULL,
        tid BIGINT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        config TEXT NOT NULL,
        chap TEXT NOT NULL,
        updated BIGINT NOT NULL,
        UNIQUE (controller, tid)
    )",
        // The provisioning journal: what a node's work has started, undone in reverse.
        "CREATE TABLE steps (
        hostname TEXT NOT NULL,
        seq BIGINT NOT NULL,
        step TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (hostname, seq)
    )",
        // Machines that asked for a boot without being known.
        "CREATE TABLE discovered (
        mac TEXT PRIMARY KEY,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        requests BIGINT NOT NULL
    )",
    ],
    &[
        // Boot reports (issue 25): each node's token, what it last said, and its recent events.
        "ALTER TABLE nodes ADD COLUMN report_token TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nodes ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE nodes ADD COLUMN running_version TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nodes ADD COLUMN running_digest TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nodes ADD COLUMN last_boot BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE nodes ADD COLUMN last_result TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX nodes_by_token ON nodes (report_token)",
        "CREATE TABLE boots (
        hostname TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        event TEXT NOT NULL,
        received BIGINT NOT NULL,
        version TEXT NOT NULL,
        digest TEXT NOT NULL,
        result TEXT NOT NULL,
        report TEXT NOT NULL,
        PRIMARY KEY (hostname, boot_id, event)
    )",
        "CREATE INDEX boots_by_time ON boots (hostname, received)",
    ],
    &[
        // Rollouts (issue 25): labels, rollouts and their members, digests that failed on
        // a node.
        "CREATE TABLE labels (
            hostname TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (hostname, key)
        )",
        "CREATE TABLE rollouts (
            id TEXT PRIMARY KEY,
            reference TEXT NOT NULL,
            digest TEXT NOT NULL,
            selector TEXT NOT NULL,
            waves TEXT NOT NULL,
            max_unavailable BIGINT NOT NULL,
            pause_after BIGINT NOT NULL,
            confirm_within BIGINT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            created BIGINT NOT NULL,
            updated BIGINT NOT NULL,
            lease_owner TEXT NOT NULL DEFAULT '',
            lease_until BIGINT NOT NULL DEFAULT 0,
            counted_from BIGINT NOT NULL DEFAULT 0
        )",
        "CREATE TABLE rollout_nodes (
            rollout TEXT NOT NULL,
            hostname TEXT NOT NULL,
            wave BIGINT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            since BIGINT NOT NULL,
            version TEXT NOT NULL,
            PRIMARY KEY (rollout, hostname)
        )",
        "CREATE INDEX rollout_nodes_by_node ON rollout_nodes (hostname, state)",
        "CREATE TABLE bad_digests (
            hostname TEXT NOT NULL,
            digest TEXT NOT NULL,
            reason TEXT NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (hostname, digest)
        )",
    ],
];

/// What a batch leaves on a node's row: its last result, and its last boot's version and
/// digest when it booted.
type NewLife<'a> = (&'a str, Option<(&'a str, &'a str)>);

/// `rows` tuples of `width` placeholders each, `($first, …), (…)`, numbered on from `first`.
fn placeholders(rows: usize, width: usize, first: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (0..width)
                .map(|c| format!("${}", first + r * width + c))
                .collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Boot events kept per node (older ones are dropped as new ones come).
pub const KEEP_EVENTS: i64 = 50;

/// A database error, with what was being done.
#[derive(Debug)]
pub struct DbError {
    /// What the controller was doing.
    pub context: String,
    /// sqlx's error.
    pub err: sqlx::Error,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database: {}: {}", self.context, self.err)
    }
}

impl std::error::Error for DbError {}

fn ctx(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    let context = context.into();
    move |err| DbError { context, err }
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Its hostname, the key.
    pub hostname: String,
    /// Its MAC, lowercase with colons.
    pub mac: String,
    /// The image reference it was added with (or last upgraded to).
    pub image: String,
    /// The image's manifest digest, once resolved.
    pub digest: String,
    /// The root version its LUN boots by default.
    pub version: String,
    /// Its initiator IQN.
    pub initiator: String,
    /// Its target IQN.
    pub target: String,
    /// The portal its target is served on (`host:port`, as the node reaches it).
    pub portal: String,
    /// The controller whose state directory and tgtd hold its LUN.
    pub controller: String,
    /// Its target's id on that tgtd.
    pub tid: i64,
    /// `provisioning`, `ready`, `booted`, `upgrading`, `deleting` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: String,
    /// The node.toml it was added with (may hold secrets: never shown).
    pub config: String,
    /// Its CHAP credentials as JSON, or empty (never shown).
    pub chap: String,
    /// Last change, milliseconds since the epoch.
    pub updated: i64,
    /// The token its boot reports carry (never shown; served in its own initramfs).
    pub report_token: String,
}

const NODE_COLUMNS: &str = "hostname, mac, image, digest, version, initiator, target, portal, \
                            controller, tid, state, reason, config, chap, updated, report_token";

fn node_from(row: &AnyRow) -> Result<NodeRow, sqlx::Error> {
    Ok(NodeRow {
        hostname: row.try_get("hostname")?,
        mac: row.try_get("mac")?,
        image: row.try_get("image")?,
        digest: row.try_get("digest")?,
        version: row.try_get("version")?,
        initiator: row.try_get("initiator")?,
        target: row.try_get("target")?,
        portal: row.try_get("portal")?,
        controller: row.try_get("controller")?,
        tid: row.try_get("tid")?,
        state: row.try_get("state")?,
        reason: row.try_get("reason")?,
        config: row.try_get("config")?,
        chap: row.try_get("chap")?,
        updated: row.try_get("updated")?,
        report_token: row.try_get("report_token")?,
    })
}

/// One journal entry: a provisioning step that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    /// Order within the node's journal.
    pub seq: i64,
    /// The step's name.
    pub step: String,
    /// What it made (a path, a tid, a MAC).
    pub detail: String,
}

/// A machine that asked for a boot without being known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Discovered {
    /// Its MAC.
    pub mac: String,
    /// First request, ms since the epoch.
    pub first_seen: i64,
    /// Last request, ms since the epoch.
    pub last_seen: i64,
    /// Requests so far.
    pub requests: i64,
}

/// What a node last told the controller (`node list`'s columns), kept on its row so a
/// listing reads one table however many reports came.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Life {
    /// Last report of any kind, ms since the epoch (0: never).
    pub last_seen: i64,
    /// The version its last boot runs.
    pub running_version: String,
    /// That version's image digest.
    pub running_digest: String,
    /// Its last boot report, ms since the epoch (0: never).
    pub last_boot: i64,
    /// How the last event went: `booted`, `tentative`, `fell back`, `confirmed`, `rejected`.
    pub last_result: String,
}

const LIFE_COLUMNS: &str = "last_seen, running_version, running_digest, last_boot, last_result";

fn life_from(r: &AnyRow) -> Result<Life, sqlx::Error> {
    Ok(Life {
        last_seen: r.try_get("last_seen")?,
        running_version: r.try_get("running_version")?,
        running_digest: r.try_get("running_digest")?,
        last_boot: r.try_get("last_boot")?,
        last_result: r.try_get("last_result")?,
    })
}

/// One stored event of a node: a boot, a confirmation or a rejection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRow {
    /// The kernel's boot id.
    pub boot_id: String,
    /// `boot`, `confirmed` or `rejected`.
    pub event: String,
    /// When it arrived, ms since the epoch.
    pub received: i64,
    /// The version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// How it went ([`Life::last_result`]'s words).
    pub result: String,
    /// The report as the node sent it.
    pub report: serde_json::Value,
}

/// A report as the controller received it, on its way into the database.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The node its token named.
    pub hostname: String,
    /// The report.
    pub message: Message,
    /// Its body as received (stored as is).
    pub text: String,
    /// [`Message::result`].
    pub result: String,
}

/// Why an insert was refused.
#[derive(Debug)]
pub enum AddError {
    /// The hostname, MAC or initiator belongs to another node.
    Taken {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The node that has it.
        node: String,
    },
    /// The database failed.
    Db(DbError),
}

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            "postgres"
        } else {
            return Err(DbError {
                context: format!("{url}: not a sqlite:// or postgres:// URL"),
                err: sqlx::Error::Configuration("unsupported database URL".into()),
            });
        };
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == "sqlite" { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(30));
        if backend == "sqlite" {
            // Writers wait for each other instead of failing with SQLITE_BUSY.
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 30000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        // One plain connection first: a wrong URL or a server that is down fails at once
        // (the pool would retry until its timeout).
        {
            use sqlx::Connection as _;
            let conn = sqlx::AnyConnection::connect(url)
                .await
                .map_err(ctx(format!("connecting to {}", redact_url(url))))?;
            let _ = conn.close().await;
        }
        let pool = opts
            .connect(url)
            .await
            .map_err(ctx(format!("connecting to {}", redact_url(url))))?;
        if backend == "sqlite" {
            // Readers (boot scripts) never wait for a provisioning writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(ctx("setting WAL mode"))?;
        }
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        // Two controllers starting on one database may race to create the schema: the loser
        // finds it made and checks again.
        let mut last = None;
        for _ in 0..5 {
            match self.migrate_once().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last.expect("tried"))
    }

    async fn migrate_once(&self) -> Result<(), DbError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS terra_schema (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(ctx("creating terra_schema"))?;
        let mut tx = self.pool.begin().await.map_err(ctx("migrating"))?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM terra_schema")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("v"))
            .map_err(ctx("reading the schema version"))?;
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            for s in *statements {
                sqlx::query(s)
                    .execute(&mut *tx)
                    .await
                    .map_err(ctx(format!("migration {}", i + 1)))?;
            }
            sqlx::query("INSERT INTO terra_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(ctx(format!("recording migration {}", i + 1)))?;
        }
        tx.commit().await.map_err(ctx("committing the migrations"))
    }

    /// The schema version.
    pub async fn schema_version(&self) -> Result<i64, DbError> {
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM terra_schema")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("v"))
            .map_err(ctx("reading the schema version"))
    }

    /// Inserts a new node in `provisioning` with the next free tid of its controller. A
    /// taken hostname, MAC or initiator is refused, naming the node that has it.
    pub async fn add_node(&self, mut node: NodeRow) -> Result<NodeRow, AddError> {
        let mut last = None;
        // Two controllers (or two requests) may pick one tid: the unique index refuses the
        // second, which tries the next.
        for _ in 0..50 {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(ctx("adding a node"))
                .map_err(AddError::Db)?;
            if self.backend == "sqlite" {
                // Take SQLite's write lock first (waiting for it under busy_timeout), as
                // BEGIN IMMEDIATE would: a transaction that read first and then writes fails
                // at once with "database is locked" when another writer committed between.
                sqlx::query("UPDATE terra_schema SET version = version WHERE 1 = 0")
                    .execute(&mut *tx)
                    .await
                    .map_err(ctx(format!(
                        "adding node {}: waiting for the database",
                        node.hostname
                    )))
                    .map_err(AddError::Db)?;
            }
            for (field, column, value) in [
                ("hostname", "hostname", &node.hostname),
                ("mac", "mac", &node.mac),
                ("initiator", "initiator", &node.initiator),
                ("target", "target", &node.target),
            ] {
                let q = format!("SELECT hostname FROM nodes WHERE {column} = $1");
                let found = sqlx::query(&q)
                    .bind(value.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(ctx(format!("looking up {field} {value}")))
                    .map_err(AddError::Db)?;
                if let Some(row) = found {
                    return Err(AddError::Taken {
                        field,
                        value: value.clone(),
                        node: row.try_get("hostname").unwrap_or_default(),
                    });
                }
            }
            let tid: i64 = sqlx::query(
                "SELECT COALESCE(MAX(tid), 0) + 1 AS t FROM nodes WHERE controller = $1",
            )
            .bind(node.controller.clone())
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("t"))
            .map_err(ctx("allocating a target id"))
            .map_err(AddError::Db)?;
            node.tid = tid;
            node.updated = now_ms();
            let inserted = sqlx::query(&format!(
                "INSERT INTO nodes ({NODE_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ))
            .bind(node.hostname.clone())
            .bind(node.mac.clone())
            .bind(node.image.clone())
            .bind(node.digest.clone())
            .bind(node.version.clone())
            .bind(node.initiator.clone())
            .bind(node.target.clone())
            .bind(node.portal.clone())
            .bind(node.controller.clone())
            .bind(node.tid)
            .bind(node.state.clone())
            .bind(node.reason.clone())
            .bind(node.config.clone())
            .bind(node.chap.clone())
            .bind(node.updated)
            .bind(node.report_token.clone())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit()
                        .await
                        .map_err(ctx(format!("adding node {}", node.hostname)))
                        .map_err(AddError::Db)?;
                    return Ok(node);
                }
                Err(err) => {
                    let _ = tx.rollback().await;
                    last = Some(err);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(AddError::Db(DbError {
            context: format!("adding node {}", node.hostname),
            err: last.expect("tried"),
        }))
    }

    /// The node named `hostname`.
    pub async fn node(&self, hostname: &str) -> Result<Option<NodeRow>, DbError> {
        self.node_where("hostname", hostname, &format!("reading node {hostname}"))
            .await
    }

    /// The node with MAC `mac` (lowercase, colons).
    pub async fn node_by_mac(&self, mac: &str) -> Result<Option<NodeRow>, DbError> {
        self.node_where("mac", mac, &format!("looking up MAC {mac}"))
            .await
    }

    /// The node whose unique `column` holds `value`; `what` names the lookup in errors.
    async fn node_where(
        &self,
        column: &'static str,
        value: &str,
        what: &str,
    ) -> Result<Option<NodeRow>, DbError> {
        let q = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE {column} = $1");
        let row = sqlx::query(&q)
            .bind(value.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx(what))?;
        row.as_ref().map(node_from).transpose().map_err(ctx(what))
    }

    /// Every node, by hostname.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, DbError> {
        let q = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY hostname");
        let rows = sqlx::query(&q)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing nodes"))?;
        rows.iter()
            .map(node_from)
            .collect::<Result<_, _>>()
            .map_err(ctx("listing nodes"))
    }

    /// Sets a node's state and reason.
    pub async fn set_state(
        &self,
        hostname: &str,
        state: &str,
        reason: &str,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE nodes SET state = $1, reason = $2, updated = $3 WHERE hostname = $4")
            .bind(state.to_string())
            .bind(reason.to_string())
            .bind(now_ms())
            .bind(hostname.to_string())
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(ctx(format!("setting node {hostname} {state}")))
    }

    /// Moves a node from `from` to `to` only if it is in `from`; whether it did.
    pub async fn transition(&self, hostname: &str, from: &str, to: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE nodes SET state = $1, reason = '', updated = $2 \
             WHERE hostname = $3 AND state = $4",
        )
        .bind(to.to_string())
        .bind(now_ms())
        .bind(hostname.to_string())
        .bind(from.to_string())
        .execute(&self.pool)
        .await
        .map_err(ctx(format!("moving node {hostname} from {from} to {to}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the image a node's LUN holds.
    pub async fn set_image(
        &self,
        hostname: &str,
        image: &str,
        digest: &str,
        version: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE nodes SET image = $1, digest = $2, version = $3, updated = $4 \
             WHERE hostname = $5",
        )
        .bind(image.to_string())
        .bind(digest.to_string())
        .bind(version.to_string())
        .bind(now_ms())
        .bind(hostname.to_string())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(ctx(format!("recording node {hostname}'s image")))
    }

    /// Removes a node and its journal.
    pub async fn delete_node(&self, hostname: &str) -> Result<(), DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(ctx(format!("deleting node {hostname}")))?;
        for q in [
            "DELETE FROM steps WHERE hostname = $1",
            "DELETE FROM boots WHERE hostname = $1",
            "DELETE FROM labels WHERE hostname = $1",
            "DELETE FROM nodes WHERE hostname = $1",
        ] {
            sqlx::query(q)
                .bind(hostname.to_string())
                .execute(&mut *tx)
                .await
                .map_err(ctx(format!("deleting node {hostname}")))?;
        }
        tx.commit()
            .await
            .map_err(ctx(format!("deleting node {hostname}")))
    }

    /// Journals that `step` (making `detail`) starts for `hostname`; written before the
    /// step runs, so a crash in it is undone too.
    pub async fn journal(&self, hostname: &str, step: &str, detail: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO steps (hostname, seq, step, detail) SELECT $1, \
             COALESCE(MAX(seq), 0) + 1, $2, $3 FROM steps WHERE hostname = $4",
        )
        .bind(hostname.to_string())
        .bind(step.to_string())
        .bind(detail.to_string())
        .bind(hostname.to_string())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(ctx(format!("journaling {step} of node {hostname}")))
    }

    /// A node's journal, oldest first.
    pub async fn steps(&self, hostname: &str) -> Result<Vec<StepRow>, DbError> {
        let rows =
            sqlx::query("SELECT seq, step, detail FROM steps WHERE hostname = $1 ORDER BY seq")
                .bind(hostname.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(ctx(format!("reading node {hostname}'s journal")))?;
        rows.iter()
            .map(|r| {
                Ok(StepRow {
                    seq: r.try_get("seq")?,
                    step: r.try_get("step")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(format!("reading node {hostname}'s journal")))
    }

    /// Drops one journal entry (its step was undone).
    pub async fn unjournal(&self, hostname: &str, seq: i64) -> Result<(), DbError> {
        sqlx::query("DELETE FROM steps WHERE hostname = $1 AND seq = $2")
            .bind(hostname.to_string())
            .bind(seq)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(ctx(format!("clearing node {hostname}'s journal")))
    }

    /// The node whose report token is `token` (never matches an empty one).
    pub async fn node_by_token(&self, token: &str) -> Result<Option<NodeRow>, DbError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.node_where("report_token", token, "looking up a report token")
            .await
    }

    /// Gives `hostname` a report token if it has none (nodes added before reports
    /// existed); returns the token it has.
    pub async fn ensure_report_token(
        &self,
        hostname: &str,
        fresh: &str,
    ) -> Result<String, DbError> {
        let what = format!("giving node {hostname} a report token");
        sqlx::query("UPDATE nodes SET report_token = $1 WHERE hostname = $2 AND report_token = ''")
            .bind(fresh.to_string())
            .bind(hostname.to_string())
            .execute(&self.pool)
            .await
            .map_err(ctx(what.clone()))?;
        sqlx::query("SELECT report_token FROM nodes WHERE hostname = $1")
            .bind(hostname.to_string())
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("report_token"))
            .map_err(ctx(what))
    }

    /// Stores one event of `hostname` (`report` is the body as received) and brings the
    /// node's [`Life`] up to date, in one transaction; the same event sent twice (same
    /// boot id) counts once. Keeps the last [`KEEP_EVENTS`]. Returns whether it was new.
    pub async fn record_event(
        &self,
        hostname: &str,
        m: &Message,
        report: &str,
        result: &str,
    ) -> Result<bool, DbError> {
        let one = Incoming {
            hostname: hostname.to_string(),
            message: m.clone(),
            text: report.to_string(),
            result: result.to_string(),
        };
        Ok(self.record_events(std::slice::from_ref(&one)).await?[0])
    }

    /// [`Self::record_event`] for a batch, in one transaction (one commit, so one flush to
    /// disk, for all of them) of four statements whatever its size: one insert of every
    /// event (which says which were new), one update of the nodes that booted and one of
    /// the others, one retention pass over the nodes touched. Whether each was new.
    pub async fn record_events(&self, batch: &[Incoming]) -> Result<Vec<bool>, DbError> {
        let what = format!("recording {} report(s)", batch.len());
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(ctx(what.clone()))?;
        let parts: Vec<(String, String)> = batch
            .iter()
            .map(|b| {
                b.message
                    .version
                    .as_ref()
                    .map_or((String::new(), String::new()), |v| {
                        (v.name.clone(), v.digest.clone())
                    })
            })
            .collect();
        let mut insert = String::from(
            "INSERT INTO boots (hostname, boot_id, event, received, version, digest, result, \
             report) VALUES ",
        );
        insert.push_str(&placeholders(batch.len(), 8, 1));
        insert.push_str(
            " ON CONFLICT (hostname, boot_id, event) DO NOTHING RETURNING hostname, boot_id, event",
        );
        let mut q = sqlx::query(&insert);
        for (b, (version, digest)) in batch.iter().zip(&parts) {
            q = q
                .bind(b.hostname.clone())
                .bind(b.message.boot_id.clone())
                .bind(b.message.event.as_str().to_string())
                .bind(now)
                .bind(version.clone())
                .bind(digest.clone())
                .bind(b.result.clone())
                .bind(b.text.clone());
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(ctx(what.clone()))?;
        let mut inserted = std::collections::HashSet::new();
        for r in &rows {
            let key: (String, String, String) = (
                r.try_get("hostname").map_err(ctx(what.clone()))?,
                r.try_get("boot_id").map_err(ctx(what.clone()))?,
                r.try_get("event").map_err(ctx(what.clone()))?,
            );
            inserted.insert(key);
        }
        // New events in batch order (a key sent twice in one batch is new once); each
        // node's row ends as its last new event says, its running version as its last boot.
        let mut new = Vec::with_capacity(batch.len());
        let mut lives: BTreeMap<&str, NewLife> = BTreeMap::new();
        for (b, (version, digest)) in batch.iter().zip(&parts) {
            let key = (
                b.hostname.clone(),
                b.message.boot_id.clone(),
                b.message.event.as_str().to_string(),
            );
            let fresh = inserted.remove(&key);
            new.push(fresh);
            if !fresh {
                continue;
            }
            let life = lives.entry(&b.hostname).or_insert((&b.result, None));
            life.0 = &b.result;
            if b.message.event == Event::Boot {
                life.1 = Some((version, digest));
            }
        }
        let booted: Vec<_> = lives
            .iter()
            .filter_map(|(h, (r, boot))| boot.map(|(v, d)| (*h, *r, v, d)))
            .collect();
        if !booted.is_empty() {
            let sql = format!(
                "UPDATE nodes SET last_seen = $1, last_boot = $2, last_result = v.column2, \
                 running_version = v.column3, running_digest = v.column4 FROM (VALUES {}) AS v \
                 WHERE nodes.hostname = v.column1",
                placeholders(booted.len(), 4, 3)
            );
            let mut q = sqlx::query(&sql).bind(now).bind(now);
            for (h, r, v, d) in &booted {
                q = q
                    .bind(h.to_string())
                    .bind(r.to_string())
                    .bind(v.to_string())
                    .bind(d.to_string());
            }
            q.execute(&mut *tx).await.map_err(ctx(what.clone()))?;
        }
        let others: Vec<_> = lives
            .iter()
            .filter(|(_, (_, boot))| boot.is_none())
            .map(|(h, (r, _))| (*h, *r))
            .collect();
        if !others.is_empty() {
            let sql = format!(
                "UPDATE nodes SET last_seen = $1, last_result = v.column2 FROM (VALUES {}) AS v \
                 WHERE nodes.hostname = v.column1",
                placeholders(others.len(), 2, 2)
            );
            let mut q = sqlx::query(&sql).bind(now);
            for (h, r) in &others {
                q = q.bind(h.to_string()).bind(r.to_string());
            }
            q.execute(&mut *tx).await.map_err(ctx(what.clone()))?;
        }
        if !lives.is_empty() {
            // Retention: each touched node's events beyond its KEEP_EVENTS newest.
            let sql = format!(
                "DELETE FROM boots WHERE (hostname, boot_id, event) IN (SELECT hostname, \
                 boot_id, event FROM (SELECT hostname, boot_id, event, ROW_NUMBER() OVER \
                 (PARTITION BY hostname ORDER BY received DESC) AS n FROM boots WHERE hostname \
                 IN ({})) AS ranked WHERE n > $1)",
                (0..lives.len())
                    .map(|i| format!("${}", i + 2))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql).bind(KEEP_EVENTS);
            for h in lives.keys() {
                q = q.bind(h.to_string());
            }
            q.execute(&mut *tx).await.map_err(ctx(what.clone()))?;
        }
        tx.commit().await.map_err(ctx(what))?;
        Ok(new)
    }

    /// Every node's [`Life`], by hostname.
    pub async fn lives(&self) -> Result<Vec<(String, Life)>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT hostname, {LIFE_COLUMNS} FROM nodes ORDER BY hostname"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("listing what nodes reported"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("hostname")?, life_from(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("listing what nodes reported"))
    }

    /// Node `hostname`'s [`Life`] (None: no such node).
    pub async fn life(&self, hostname: &str) -> Result<Option<Life>, DbError> {
        let what = format!("reading what node {hostname} reported");
        let row = sqlx::query(&format!(
            "SELECT {LIFE_COLUMNS} FROM nodes WHERE hostname = $1"
        ))
        .bind(hostname.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx(what.clone()))?;
        row.as_ref().map(life_from).transpose().map_err(ctx(what))
    }

    /// A node's events, newest first (at most `limit`).
    pub async fn events(&self, hostname: &str, limit: i64) -> Result<Vec<EventRow>, DbError> {
        let what = format!("reading node {hostname}'s boots");
        let rows = sqlx::query(
            "SELECT boot_id, event, received, version, digest, result, report FROM boots \
             WHERE hostname = $1 ORDER BY received DESC, event DESC LIMIT $2",
        )
        .bind(hostname.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(ctx(what.clone()))?;
        rows.iter()
            .map(|r| {
                let report: String = r.try_get("report")?;
                Ok(EventRow {
                    boot_id: r.try_get("boot_id")?,
                    event: r.try_get("event")?,
                    received: r.try_get("received")?,
                    version: r.try_get("version")?,
                    digest: r.try_get("digest")?,
                    result: r.try_get("result")?,
                    report: serde_json::from_str(&report).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(what))
    }

    /// Records a boot request from an unknown MAC.
    pub async fn discovered(&self, mac: &str) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO discovered (mac, first_seen, last_seen, requests) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (mac) DO UPDATE SET last_seen = $4, requests = discovered.requests + 1",
        )
        .bind(mac.to_string())
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(ctx(format!("recording unknown MAC {mac}")))
    }

    /// Machines that asked for a boot without being known.
    pub async fn discoveries(&self) -> Result<Vec<Discovered>, DbError> {
        let rows =
            sqlx::query("SELECT mac, first_seen, last_seen, requests FROM discovered ORDER BY mac")
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("listing discovered machines"))?;
        rows.iter()
            .map(|r| {
                Ok(Discovered {
                    mac: r.try_get("mac")?,
                    first_seen: r.try_get("first_seen")?,
                    last_seen: r.try_get("last_seen")?,
                    requests: r.try_get("requests")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("listing discovered machines"))
    }
}

/// A database URL for messages: a password in it is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_urls_in_messages() {
        assert_eq!(
            redact_url("postgres://terra:s3cret@127.0.0.1:5432/terra"),
            "postgres://terra:***@127.0.0.1:5432/terra"
        );
        assert_eq!(redact_url("sqlite:///x/terra.db"), "sqlite:///x/terra.db");
        assert_eq!(
            redact_url("postgres://terra@/terra?host=/run"),
            "postgres://terra@/terra?host=/run"
        );
    }
}
