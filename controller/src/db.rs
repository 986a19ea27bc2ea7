//! The controller's state: one schema on SQLite (a file under the state directory, the
//! embedded default) or PostgreSQL (several controllers sharing one database), through
//! sqlx's Any driver. Every change is a transaction; the schema has numbered migrations.
//!
//! Only portable SQL is used: TEXT and BIGINT columns, `$n` placeholders (SQLite accepts
//! them as numbered parameters), no autoincrement (a node's key is its hostname).

use std::fmt;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Migrations, in order: each is applied once, in a transaction, and recorded in
/// `terra_schema`.
const MIGRATIONS: &[&[&str]] = &[&[
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
]];

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
}

const NODE_COLUMNS: &str = "hostname, mac, image, digest, version, initiator, target, portal, \
                            controller, tid, state, reason, config, chap, updated";

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
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
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
