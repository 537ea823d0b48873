//! Upload tokens: `cbt_` and 43 base64url characters (32 random bytes, 256
//! bits). Only their SHA-256 is stored: a random token of that length needs
//! no slow hash, and a stolen database gives no token.

use crate::db::DbError;
use base64::Engine as _;
use cbt_proto::upload::is_ods;
use cbt_proto::site::UNASSIGNED;
use deadpool_postgres::Pool;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "cbt_";

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token as the requests use it.
#[derive(Clone, Debug)]
pub struct Auth {
    pub token_id: i64,
    pub agent: String,
    pub practices: Vec<String>,
}

impl Auth {
    /// May this token send documents of `practice`?
    pub fn may_send(&self, practice: &str) -> bool {
        practice == UNASSIGNED || self.practices.iter().any(|p| p == practice)
    }
}

/// What a presented token is.
pub enum Lookup {
    Valid(Auth),
    Revoked { token_id: i64, agent: String, at: String },
    Unknown,
}

/// Finds the token by its hash.
pub async fn lookup(pool: &Pool, token: &str) -> Result<Lookup, DbError> {
    let client = pool.get().await?;
    let st = client
        .prepare_cached(
            "SELECT t.id, t.agent, to_char(t.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    COALESCE(array_agg(p.practice ORDER BY p.practice) FILTER (WHERE p.practice IS NOT NULL), '{}')
             FROM tokens t LEFT JOIN token_practices p ON p.token_id = t.id
             WHERE t.hash = $1 GROUP BY t.id",
        )
        .await?;
    let h = hash(token);
    let Some(row) = client.query_opt(&st, &[&&h[..]]).await? else {
        return Ok(Lookup::Unknown);
    };
    let token_id: i64 = row.get(0);
    let agent: String = row.get(1);
    if let Some(at) = row.get::<_, Option<String>>(2) {
        return Ok(Lookup::Revoked { token_id, agent, at });
    }
    Ok(Lookup::Valid(Auth {
        token_id,
        agent,
        practices: row.get(3),
    }))
}

/// Checks an agent name given on the command line.
pub fn check_agent_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.len() > 128 || name.trim() != name || name.chars().any(char::is_control) {
        anyhow::bail!("--agent {name:?}: an agent name is 1 to 128 characters without surrounding spaces (use the agent's upload.agent_id, by default its host name)");
    }
    Ok(())
}

/// Creates a token for `agent`, bound to `practices`. Returns (id, token).
pub async fn add(pool: &Pool, agent: &str, practices: &[String]) -> anyhow::Result<(i64, String)> {
    check_agent_name(agent)?;
    let mut bad = Vec::new();
    for p in practices {
        if !is_ods(p) {
            bad.push(p.clone());
        }
    }
    if !bad.is_empty() {
        anyhow::bail!(
            "--practice {}: not an ODS practice code (a capital letter and five digits, like B82005); `Unassigned` is always allowed and need not be given",
            bad.join(", ")
        );
    }
    let token = generate();
    let mut client = pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let h = hash(&token);
    let row = tx
        .query_one("INSERT INTO tokens (agent, hash) VALUES ($1, $2) RETURNING id", &[&agent, &&h[..]])
        .await
        .map_err(DbError::from)?;
    let id: i64 = row.get(0);
    for p in practices {
        tx.execute("INSERT INTO token_practices (token_id, practice) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&id, p])
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok((id, token))
}

/// Revokes tokens by agent name or id; returns the ids revoked.
pub async fn revoke(pool: &Pool, agent: Option<&str>, id: Option<i64>) -> anyhow::Result<Vec<i64>> {
    let client = pool.get().await.map_err(DbError::from)?;
    let rows = match (agent, id) {
        (Some(a), None) => client
            .query("UPDATE tokens SET revoked_at = now() WHERE agent = $1 AND revoked_at IS NULL RETURNING id", &[&a])
            .await
            .map_err(DbError::from)?,
        (None, Some(i)) => client
            .query("UPDATE tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id", &[&i])
            .await
            .map_err(DbError::from)?,
        _ => anyhow::bail!("give --agent NAME or --token-id N"),
    };
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// One line of `token list`.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    pub id: i64,
    pub agent: String,
    pub practices: Vec<String>,
    pub created: String,
    pub revoked: Option<String>,
    pub last_used: Option<String>,
}

pub async fn list(pool: &Pool) -> anyhow::Result<Vec<Listed>> {
    let client = pool.get().await.map_err(DbError::from)?;
    let rows = client
        .query(
            "SELECT t.id, t.agent,
                    COALESCE((SELECT array_agg(practice ORDER BY practice) FROM token_practices WHERE token_id = t.id), '{}'),
                    to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                    to_char(t.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                    (SELECT to_char(max(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM documents WHERE token_id = t.id)
             FROM tokens t ORDER BY t.agent, t.id",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    Ok(rows
        .iter()
        .map(|r| Listed {
            id: r.get(0),
            agent: r.get(1),
            practices: r.get(2),
            created: r.get(3),
            revoked: r.get(4),
            last_used: r.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43, "{a}");
        assert!(a[PREFIX.len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn unassigned_is_always_allowed() {
        let a = Auth { token_id: 1, agent: "x".into(), practices: vec!["B82005".into()] };
        assert!(a.may_send("B82005"));
        assert!(a.may_send("Unassigned"));
        assert!(!a.may_send("B82099"));
    }
}
