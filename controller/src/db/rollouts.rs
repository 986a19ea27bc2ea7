//! Rollouts in the database: the rollout, its members (one row per node: its wave and
//! where it stands), node labels, and the digests that failed on a node (never offered to
//! it again). Every move is a conditional update (`… WHERE state IN (…)`): of two
//! controllers on one PostgreSQL, or a controller and its restarted self, one wins and the
//! other sees zero rows changed, so no node is moved twice.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{ctx, now_ms, Db, DbError};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutRow {
    /// Its id (`r-` and six random characters).
    pub id: String,
    /// The image reference as given.
    pub reference: String,
    /// The manifest digest it was resolved to when the rollout started.
    pub digest: String,
    /// Which nodes (`waves::Selector` as JSON).
    pub selector: String,
    /// The waves as written.
    pub waves: String,
    /// At most this many members move at once.
    pub max_unavailable: i64,
    /// Pause once this many members failed.
    pub pause_after: i64,
    /// A member booting the version has this long to confirm it, ms.
    pub confirm_within: i64,
    /// `running`, `paused`, `aborted`, `done`.
    pub state: String,
    /// Why it paused or stopped.
    pub reason: String,
    /// When it started, ms since the epoch.
    pub created: i64,
    /// Last change.
    pub updated: i64,
}

/// One node of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberRow {
    /// The node.
    pub hostname: String,
    /// Its wave, from 0.
    pub wave: i64,
    /// `pending`, `waiting` (offered: at its next boot or in its window), `upgrading`,
    /// `booting` (the version is on its disk), `trial` (booted it, not yet confirmed),
    /// `confirmed`, `failed`, `skipped`, `aborted`.
    pub state: String,
    /// Why it failed or was skipped (what stage0 or `bless` reported).
    pub reason: String,
    /// When it entered its state, ms since the epoch.
    pub since: i64,
    /// The version name the upgrade made on its disk (diskless nodes).
    pub version: String,
}

const ROLLOUT_COLUMNS: &str = "id, reference, digest, selector, waves, max_unavailable, \
                               pause_after, confirm_within, state, reason, created, updated";

fn rollout_from(r: &AnyRow) -> Result<RolloutRow, sqlx::Error> {
    Ok(RolloutRow {
        id: r.try_get("id")?,
        reference: r.try_get("reference")?,
        digest: r.try_get("digest")?,
        selector: r.try_get("selector")?,
        waves: r.try_get("waves")?,
        max_unavailable: r.try_get("max_unavailable")?,
        pause_after: r.try_get("pause_after")?,
        confirm_within: r.try_get("confirm_within")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        created: r.try_get("created")?,
        updated: r.try_get("updated")?,
    })
}

fn member_from(r: &AnyRow) -> Result<MemberRow, sqlx::Error> {
    Ok(MemberRow {
        hostname: r.try_get("hostname")?,
        wave: r.try_get("wave")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        since: r.try_get("since")?,
        version: r.try_get("version")?,
    })
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Members written per INSERT (a 10,000-node rollout is 40 statements in one transaction).
const MEMBER_BATCH: usize = 250;

impl Db {
    /// Sets (`Some`) or removes (`None`) labels of `hostname`.
    pub async fn set_labels(
        &self,
        hostname: &str,
        labels: &[(String, Option<String>)],
    ) -> Result<(), DbError> {
        let what = format!("labelling node {hostname}");
        let mut tx = self.pool.begin().await.map_err(ctx(what.clone()))?;
        for (key, value) in labels {
            sqlx::query("DELETE FROM labels WHERE hostname = $1 AND key = $2")
                .bind(hostname.to_string())
                .bind(key.clone())
                .execute(&mut *tx)
                .await
                .map_err(ctx(what.clone()))?;
            if let Some(v) = value {
                sqlx::query("INSERT INTO labels (hostname, key, value) VALUES ($1, $2, $3)")
                    .bind(hostname.to_string())
                    .bind(key.clone())
                    .bind(v.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(ctx(what.clone()))?;
            }
        }
        tx.commit().await.map_err(ctx(what))
    }

    /// Every label: (hostname, key, value), by hostname and key.
    pub async fn labels(&self) -> Result<Vec<(String, String, String)>, DbError> {
        let rows = sqlx::query("SELECT hostname, key, value FROM labels ORDER BY hostname, key")
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing labels"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("hostname")?,
                    r.try_get("key")?,
                    r.try_get("value")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("listing labels"))
    }

    /// Remembers that `digest` failed on `hostname` (the first reason stays).
    pub async fn add_bad_digest(
        &self,
        hostname: &str,
        digest: &str,
        reason: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO bad_digests (hostname, digest, reason, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hostname, digest) DO NOTHING",
        )
        .bind(hostname.to_string())
        .bind(digest.to_string())
        .bind(reason.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(ctx(format!(
            "recording that {digest} failed on node {hostname}"
        )))
    }

    /// The nodes `digest` failed on, with why: (hostname, reason).
    pub async fn bad_digest(&self, digest: &str) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query("SELECT hostname, reason FROM bad_digests WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(ctx(format!("reading where {digest} failed")))?;
        rows.iter()
            .map(|r| Ok((r.try_get("hostname")?, r.try_get("reason")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(format!("reading where {digest} failed")))
    }

    /// Stores a new rollout and its members in one transaction.
    pub async fn create_rollout(
        &self,
        r: &RolloutRow,
        members: &[MemberRow],
    ) -> Result<(), DbError> {
        let what = format!("starting rollout {}", r.id);
        let mut tx = self.pool.begin().await.map_err(ctx(what.clone()))?;
        sqlx::query(&format!(
            "INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES ({})",
            placeholders(1, 12)
        ))
        .bind(r.id.clone())
        .bind(r.reference.clone())
        .bind(r.digest.clone())
        .bind(r.selector.clone())
        .bind(r.waves.clone())
        .bind(r.max_unavailable)
        .bind(r.pause_after)
        .bind(r.confirm_within)
        .bind(r.state.clone())
        .bind(r.reason.clone())
        .bind(r.created)
        .bind(r.updated)
        .execute(&mut *tx)
        .await
        .map_err(ctx(what.clone()))?;
        for chunk in members.chunks(MEMBER_BATCH) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + i * 7, 7)))
                .collect();
            let q = format!(
                "INSERT INTO rollout_nodes (rollout, hostname, wave, state, reason, since, \
                 version) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&q);
            for m in chunk {
                query = query
                    .bind(r.id.clone())
                    .bind(m.hostname.clone())
                    .bind(m.wave)
                    .bind(m.state.clone())
                    .bind(m.reason.clone())
                    .bind(m.since)
                    .bind(m.version.clone());
            }
            query.execute(&mut *tx).await.map_err(ctx(what.clone()))?;
        }
        tx.commit().await.map_err(ctx(what))
    }

    /// Every rollout, newest first.
    pub async fn rollouts(&self) -> Result<Vec<RolloutRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created DESC, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("listing rollouts"))?;
        rows.iter()
            .map(rollout_from)
            .collect::<Result<_, _>>()
            .map_err(ctx("listing rollouts"))
    }

    /// Rollout `id`.
    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(ctx(format!("reading rollout {id}")))?;
        row.as_ref()
            .map(rollout_from)
            .transpose()
            .map_err(ctx(format!("reading rollout {id}")))
    }

    /// Rollout `id`'s members, by wave and hostname.
    pub async fn members(&self, id: &str) -> Result<Vec<MemberRow>, DbError> {
        let rows = sqlx::query(
            "SELECT hostname, wave, state, reason, since, version FROM rollout_nodes \
             WHERE rollout = $1 ORDER BY wave, hostname",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(ctx(format!("reading rollout {id}'s nodes")))?;
        rows.iter()
            .map(member_from)
            .collect::<Result<_, _>>()
            .map_err(ctx(format!("reading rollout {id}'s nodes")))
    }

    /// Moves rollout `id` to `to` (with `reason`) if it is in one of `from`; whether it did.
    pub async fn move_rollout(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        reason: &str,
    ) -> Result<bool, DbError> {
        let q = format!(
            "UPDATE rollouts SET state = $1, reason = $2, updated = $3 WHERE id = $4 \
             AND state IN ({})",
            placeholders(5, from.len())
        );
        let mut query = sqlx::query(&q)
            .bind(to.to_string())
            .bind(reason.to_string())
            .bind(now_ms())
            .bind(id.to_string());
        for f in from {
            query = query.bind(f.to_string());
        }
        let done = query
            .execute(&self.pool)
            .await
            .map_err(ctx(format!("moving rollout {id} to {to}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves member `hostname` of rollout `id` to `to` if it is in one of `from` (the
    /// version name too, when given); whether it did.
    pub async fn move_member(
        &self,
        id: &str,
        hostname: &str,
        from: &[&str],
        to: &str,
        reason: &str,
        version: Option<&str>,
    ) -> Result<bool, DbError> {
        let q = format!(
            "UPDATE rollout_nodes SET state = $1, reason = $2, since = $3, \
             version = COALESCE($4, version) WHERE rollout = $5 AND hostname = $6 \
             AND state IN ({})",
            placeholders(7, from.len())
        );
        let mut query = sqlx::query(&q)
            .bind(to.to_string())
            .bind(reason.to_string())
            .bind(now_ms())
            .bind(version.map(str::to_string))
            .bind(id.to_string())
            .bind(hostname.to_string());
        for f in from {
            query = query.bind(f.to_string());
        }
        let done = query.execute(&self.pool).await.map_err(ctx(format!(
            "moving node {hostname} of rollout {id} to {to}"
        )))?;
        Ok(done.rows_affected() == 1)
    }

    /// The rollouts (not done or aborted) in which `hostname` is in one of `states`, with
    /// its member row.
    pub async fn memberships(
        &self,
        hostname: &str,
        states: &[&str],
    ) -> Result<Vec<(RolloutRow, MemberRow)>, DbError> {
        let what = format!("reading node {hostname}'s rollouts");
        let q = format!(
            "SELECT r.id, r.reference, r.digest, r.selector, r.waves, r.max_unavailable, \
             r.pause_after, r.confirm_within, r.state, r.reason, r.created, r.updated, \
             n.hostname, n.wave, n.state AS member_state, n.reason AS member_reason, n.since, \
             n.version FROM rollouts r JOIN rollout_nodes n ON n.rollout = r.id \
             WHERE n.hostname = $1 AND r.state IN ('running', 'paused', 'aborted') \
             AND n.state IN ({}) ORDER BY r.created",
            placeholders(2, states.len())
        );
        let mut query = sqlx::query(&q).bind(hostname.to_string());
        for s in states {
            query = query.bind(s.to_string());
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(ctx(what.clone()))?;
        rows.iter()
            .map(|r| {
                Ok((
                    rollout_from(r)?,
                    MemberRow {
                        hostname: r.try_get("hostname")?,
                        wave: r.try_get("wave")?,
                        state: r.try_get("member_state")?,
                        reason: r.try_get("member_reason")?,
                        since: r.try_get("since")?,
                        version: r.try_get("version")?,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx(what))
    }

    /// Failures that failed before now no longer count towards rollout `id`'s next pause
    /// (`resume`).
    pub async fn acknowledge_failures(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE rollouts SET counted_from = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(ctx(format!("resuming rollout {id}")))
    }

    /// Since when rollout `id`'s failures count towards its pause (ms since the epoch).
    pub async fn failures_counted_from(&self, id: &str) -> Result<i64, DbError> {
        sqlx::query("SELECT counted_from FROM rollouts WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("counted_from"))
            .map_err(ctx(format!("reading rollout {id}")))
    }

    /// Which of `hostnames` are moving in a rollout that is not done (one query for a batch
    /// of reports: most nodes are in none).
    pub async fn moving_among(&self, hostnames: &[String]) -> Result<Vec<String>, DbError> {
        if hostnames.is_empty() {
            return Ok(Vec::new());
        }
        let q = format!(
            "SELECT DISTINCT n.hostname FROM rollout_nodes n JOIN rollouts r ON n.rollout = r.id \
             WHERE r.state IN ('running', 'paused', 'aborted') AND n.state IN ('waiting', \
             'upgrading', 'booting', 'trial') AND n.hostname IN ({})",
            placeholders(1, hostnames.len())
        );
        let mut query = sqlx::query(&q);
        for h in hostnames {
            query = query.bind(h.clone());
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("finding the reporting nodes' rollouts"))?;
        rows.iter()
            .map(|r| r.try_get("hostname"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("finding the reporting nodes' rollouts"))
    }

    /// Nodes pending or moving in a running or paused rollout: (hostname, member state,
    /// rollout id, reference).
    pub async fn busy_nodes(&self) -> Result<Vec<(String, String, String, String)>, DbError> {
        let rows = sqlx::query(
            "SELECT n.hostname, n.state, r.id, r.reference FROM rollout_nodes n \
             JOIN rollouts r ON n.rollout = r.id WHERE r.state IN ('running', 'paused') \
             AND n.state IN ('pending', 'waiting', 'upgrading', 'booting', 'trial')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("finding nodes busy in rollouts"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("hostname")?,
                    r.try_get("state")?,
                    r.try_get("id")?,
                    r.try_get("reference")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ctx("finding nodes busy in rollouts"))
    }

    /// Takes (or renews) the right to advance rollout `id` for `ms` as `owner`: whether
    /// this controller holds it now. A killed holder's lease runs out.
    pub async fn lease_rollout(&self, id: &str, owner: &str, ms: i64) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE rollouts SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND (lease_owner = $4 OR lease_until < $5)",
        )
        .bind(owner.to_string())
        .bind(now + ms)
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(ctx(format!("leasing rollout {id}")))?;
        Ok(done.rows_affected() == 1)
    }
}
