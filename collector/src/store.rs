//! Storing day documents and auditing every request.
//!
//! The revision rules are enforced by PostgreSQL in one transaction, so any
//! number of collectors may serve the same database:
//!
//! 1. `INSERT ... ON CONFLICT (agent, practice, day) DO UPDATE ... WHERE
//!    excluded.revision > documents.revision RETURNING`, with the audit
//!    row inserted from its result in the same statement: a new day or a
//!    higher revision is stored and audited atomically, in one round trip.
//! 2. When nothing was written, a transaction locks the stored row
//!    (`SELECT ... FOR UPDATE`), which says what the request was: the same
//!    revision with the same content is a duplicate (counted; a final copy
//!    of a non-final one marks it final), the same revision with other
//!    content a conflict, a lower revision superseded; the audit row is
//!    written in that transaction.

use crate::db::DbError;
use crate::tokens::Auth;
use cbt_proto::metrics::Indicator;
use cbt_proto::upload::DayDocument;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// What happened to a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New, or a higher revision than the one stored.
    Stored,
    /// The stored revision, with the same content.
    Duplicate,
    /// A lower revision than the one stored: not stored.
    Superseded,
    /// The stored revision, with other content: refused (409).
    Conflict,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Superseded => "superseded",
            Outcome::Conflict => "conflict",
        }
    }
}

/// One audit row.
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    pub remote: Option<IpAddr>,
    pub token_id: Option<i64>,
    pub agent: Option<String>,
    pub practice: Option<String>,
    pub day: Option<NaiveDate>,
    pub revision: Option<i64>,
    pub idempotency_key: Option<String>,
    pub status: i16,
    pub result: String,
    pub reason: Option<String>,
}

const INSERT_AUDIT: &str = "INSERT INTO audit (remote, token_id, agent, practice, day, revision, idempotency_key, status, result, reason)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn clip(s: &Option<String>, n: usize) -> Option<String> {
    s.as_ref().map(|s| s.chars().take(n).collect())
}

impl AuditEntry {
    async fn write(&self, client: &impl deadpool_postgres::GenericClient) -> Result<(), tokio_postgres::Error> {
        let st = client.prepare_cached(INSERT_AUDIT).await?;
        // what came from the network is clipped: the audit is not a store
        let agent = clip(&self.agent, 128);
        let practice = clip(&self.practice, 16);
        let key = clip(&self.idempotency_key, 256).map(|k| crate::http::redact(&k));
        let reason = clip(&self.reason, 1000);
        client
            .execute(
                &st,
                &[&self.remote, &self.token_id, &agent, &practice, &self.day, &self.revision, &key, &self.status, &self.result, &reason],
            )
            .await?;
        Ok(())
    }
}

/// Records a request that stored nothing.
pub async fn audit(pool: &Pool, entry: &AuditEntry) -> Result<(), DbError> {
    let client = pool.get().await?;
    entry.write(&client).await?;
    Ok(())
}

/// The SHA-256 of what a document says (without revision, finality and
/// time of making): equal for equal figures.
pub fn content_hash(doc: &DayDocument) -> [u8; 32] {
    Sha256::digest(doc.content_key()).into()
}

/// The result of [`store`].
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub outcome: Outcome,
    /// The revision stored after the request.
    pub stored_revision: i64,
}

/// The upload itself and, when it stored something, its audit row: one
/// statement, so atomic without a transaction block (the common case costs
/// one round trip).
const UPSERT: &str = "
WITH up AS (
INSERT INTO documents (agent, practice, day, revision, is_final, content_hash, body, token_id, agent_version, timezone,
    generated_at, wait_edges, duration_edges, region_code, icb_code, sub_icb_location_code, pcn_code, calls,
    reconcile_error, partial_calls, gap_minutes, hours_without_capture, partial_view_hours, parse_error_share,
    packets_dropped, b2bua_ambiguous)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)
ON CONFLICT (agent, practice, day) DO UPDATE SET
    revision = excluded.revision, is_final = excluded.is_final, content_hash = excluded.content_hash,
    body = excluded.body, token_id = excluded.token_id, agent_version = excluded.agent_version,
    timezone = excluded.timezone, generated_at = excluded.generated_at, wait_edges = excluded.wait_edges,
    duration_edges = excluded.duration_edges, region_code = excluded.region_code, icb_code = excluded.icb_code,
    sub_icb_location_code = excluded.sub_icb_location_code, pcn_code = excluded.pcn_code, calls = excluded.calls,
    reconcile_error = excluded.reconcile_error, partial_calls = excluded.partial_calls,
    gap_minutes = excluded.gap_minutes, hours_without_capture = excluded.hours_without_capture,
    partial_view_hours = excluded.partial_view_hours, parse_error_share = excluded.parse_error_share,
    packets_dropped = excluded.packets_dropped, b2bua_ambiguous = excluded.b2bua_ambiguous,
    received_at = now()
WHERE excluded.revision > documents.revision
RETURNING revision),
audited AS (
INSERT INTO audit (remote, token_id, agent, practice, day, revision, idempotency_key, status, result, reason)
SELECT $27, $8, $1, $2, $3, $4, $28, 200, 'stored', NULL FROM up)
SELECT revision FROM up";

/// Stores `doc` (already checked: parsed, authorised, its key matching) for
/// the token's agent, and audits the request, atomically.
pub async fn store(pool: &Pool, auth: &Auth, doc: &DayDocument, body: &str, mut audit: AuditEntry) -> Result<Stored, DbError> {
    let revision = i64::try_from(doc.revision).map_err(|_| DbError::Other("revision out of range".into()))?;
    let hash = content_hash(doc);
    let generated: DateTime<Utc> = DateTime::parse_from_rfc3339(&doc.generated_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DbError::Other("generated_at was checked".into()))?;
    let edges = |v: &[u32]| v.iter().map(|e| *e as i32).collect::<Vec<i32>>();
    let wait = edges(&doc.buckets.wait);
    let duration = edges(&doc.buckets.duration);
    let day = doc.to_day();
    let calls = day.total(Indicator::Cbt001) as i64;
    let reconcile_error = day.reconciles().err();
    let q = &doc.quality;
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let hours = q.hours_without_capture.iter().collect::<std::collections::BTreeSet<_>>().len() as i32;
    let partial_hours = q.partial_view_hours.iter().collect::<std::collections::BTreeSet<_>>().len() as i32;
    let codes = &doc.org_codes;
    let key = clip(&audit.idempotency_key, 256).map(|k| crate::http::redact(&k));

    let mut client = pool.get().await?;
    let upsert = client.prepare_cached(UPSERT).await?;
    let (partial_calls, packets_dropped, b2bua_ambiguous) = (i(q.partial_calls), i(q.packets_dropped), i(q.b2bua_ambiguous));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 28] = [
        &auth.agent,
        &doc.practice,
        &doc.date,
        &revision,
        &doc.is_final,
        &&hash[..],
        &body,
        &auth.token_id,
        &doc.agent.version,
        &doc.timezone,
        &generated,
        &wait,
        &duration,
        &codes.region_code,
        &codes.icb_code,
        &codes.sub_icb_location_code,
        &codes.pcn_code,
        &calls,
        &reconcile_error,
        &partial_calls,
        &q.gap_minutes,
        &hours,
        &partial_hours,
        &q.parse_error_share,
        &packets_dropped,
        &b2bua_ambiguous,
        &audit.remote,
        &key,
    ];
    if client.query_opt(&upsert, &params).await?.is_some() {
        return Ok(Stored { outcome: Outcome::Stored, stored_revision: revision });
    }
    // A revision >= ours is stored. Decide under the row's lock: a
    // duplicate, a conflict, or superseded (by then perhaps by a revision
    // stored since, by another collector: still the right answer).
    let tx = client.transaction().await?;
    let Some(cur) = tx
        .query_opt(
            "SELECT revision, content_hash, is_final FROM documents WHERE agent = $1 AND practice = $2 AND day = $3 FOR UPDATE",
            &[&auth.agent, &doc.practice, &doc.date],
        )
        .await?
    else {
        // deleted in between (by hand): the caller may send it again
        return Err(DbError::Unavailable("the stored document changed during the request".into()));
    };
    let stored_revision: i64 = cur.get(0);
    let stored_hash: Vec<u8> = cur.get(1);
    let stored_final: bool = cur.get(2);
    let stored = if stored_revision > revision {
        Stored { outcome: Outcome::Superseded, stored_revision }
    } else if stored_hash != hash {
        Stored { outcome: Outcome::Conflict, stored_revision }
    } else {
        if doc.is_final && !stored_final {
            // the same figures, now declared final
            tx.execute(
                "UPDATE documents SET is_final = true, body = $4, generated_at = $5, duplicates = duplicates + 1, received_at = now()
                 WHERE agent = $1 AND practice = $2 AND day = $3",
                &[&auth.agent, &doc.practice, &doc.date, &body, &generated],
            )
            .await?;
        } else {
            tx.execute(
                "UPDATE documents SET duplicates = duplicates + 1 WHERE agent = $1 AND practice = $2 AND day = $3",
                &[&auth.agent, &doc.practice, &doc.date],
            )
            .await?;
        }
        Stored { outcome: Outcome::Duplicate, stored_revision }
    };
    audit.status = if stored.outcome == Outcome::Conflict { 409 } else { 200 };
    audit.result = stored.outcome.as_str().to_string();
    if stored.outcome == Outcome::Conflict {
        audit.reason = Some(format!("revision {revision} is already stored with other content"));
    } else if stored.outcome == Outcome::Superseded {
        audit.reason = Some(format!("revision {} is stored", stored.stored_revision));
    }
    audit.write(&tx).await?;
    tx.commit().await?;
    Ok(stored)
}
