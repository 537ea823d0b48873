//! PostgreSQL: the connection pool, the versioned migrations, and telling a
//! database that is away (retry later) from a real error.
//!
//! Migrations are SQL files in `collector/migrations/`, compiled in. Each
//! is applied in one transaction, under an advisory lock (collectors
//! starting together apply them once), and recorded in
//! `cbt_schema_migrations`. A database migrated by a newer collector is
//! refused: an older collector would not know its tables.

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::time::Duration;
use std::path::Path;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Every migration, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "init", include_str!("../migrations/0001_init.sql"))];

/// The schema version this build writes and reads.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Key of the advisory lock held while migrating ("cbtmigr").
const MIGRATION_LOCK: i64 = 0x0063_6274_6d69_6772;

/// Why a database operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or is shutting down, starting, full
    /// of connections: try again later (HTTP 503).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a bug, a permission, a broken schema).
    #[error("database error: {0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        classify(&e)
    }
}

impl From<PoolError> for DbError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => classify(&e),
            PoolError::Timeout(t) => DbError::Unavailable(format!("no database connection within the time allowed ({t:?})")),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

fn classify(e: &tokio_postgres::Error) -> DbError {
    let text = describe(e);
    match e.code() {
        // connection exceptions, insufficient resources, operator
        // intervention (shutdown, starting up), serialization failures
        Some(code) => {
            let c = code.code();
            if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "40001" || c == "40P01" {
                DbError::Unavailable(text)
            } else {
                DbError::Other(text)
            }
        }
        // no SQLSTATE: the connection failed, closed or timed out
        None => DbError::Unavailable(text),
    }
}

/// The error with its causes ("error connecting to server: Connection refused").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// TLS for the database connection: the system's trusted roots plus the
/// certificates of `ca` (PEM). Used as the URL's `sslmode` says: `prefer`
/// (the default) encrypts when the server offers it, `require` insists,
/// `disable` never; the server's certificate is always verified (its name
/// against the URL's host) when TLS is used.
pub fn tls(ca: Option<&Path>) -> anyhow::Result<MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(p) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("database_ca {}: cannot read PEM certificates: {e}", p.display()))?;
        if certs.is_empty() {
            anyhow::bail!("database_ca {}: no certificate in the file", p.display());
        }
        for c in certs {
            roots.add(c).map_err(|e| anyhow::anyhow!("database_ca {}: {e}", p.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A pool of up to `size` connections. Connecting is lazy: a database that
/// is down makes requests fail with [`DbError::Unavailable`], not the start.
pub fn pool(cfg: &tokio_postgres::Config, size: usize, ca: Option<&Path>) -> anyhow::Result<Pool> {
    let mut cfg = cfg.clone();
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("cbt-collector");
    }
    let mgr = Manager::from_config(cfg, tls(ca)?, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// Applies the migrations this database lacks. Returns (version before,
/// version after).
pub async fn migrate(pool: &Pool) -> Result<(i32, i32), MigrateError> {
    let mut client = pool.get().await.map_err(|e| MigrateError::Db(e.into()))?;
    let tx = client.transaction().await.map_err(|e| MigrateError::Db(e.into()))?;
    let run = async {
        tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cbt_schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                applied_by text        NOT NULL
            )",
        )
        .await?;
        let row = tx.query_one("SELECT COALESCE(max(version), 0) FROM cbt_schema_migrations", &[]).await?;
        Ok::<i32, tokio_postgres::Error>(row.get(0))
    };
    let before = run.await.map_err(|e| MigrateError::Db(e.into()))?;
    if before > latest_version() {
        return Err(MigrateError::Newer { found: before, known: latest_version() });
    }
    let by = format!("cbt-collector {}", env!("CARGO_PKG_VERSION"));
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > before) {
        tx.batch_execute(sql).await.map_err(|e| MigrateError::Failed {
            version: *version,
            name,
            error: describe(&e),
        })?;
        tx.execute("INSERT INTO cbt_schema_migrations (version, name, applied_by) VALUES ($1, $2, $3)", &[version, name, &by])
            .await
            .map_err(|e| MigrateError::Db(e.into()))?;
    }
    tx.commit().await.map_err(|e| MigrateError::Db(e.into()))?;
    Ok((before, latest_version()))
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Db(DbError),
    #[error("the database is at schema version {found}, made by a newer cbt-collector (this one knows versions up to {known}); upgrade this collector, or point it at another database")]
    Newer { found: i32, known: i32 },
    #[error("migration {version} ({name}) failed: {error}; nothing of it was applied (it runs in one transaction)")]
    Failed { version: i32, name: &'static str, error: String },
}

/// Connects, migrates, and says what it did (used by every command).
pub async fn open(cfg: &crate::config::Config) -> anyhow::Result<Pool> {
    let pool = pool(&cfg.database, cfg.pool_size, cfg.database_ca.as_deref())?;
    match migrate(&pool).await {
        Ok((before, after)) => {
            if before != after {
                tracing::info!(from = before, to = after, "database schema migrated");
            }
            Ok(pool)
        }
        Err(MigrateError::Db(DbError::Unavailable(e))) => {
            anyhow::bail!("cannot reach the database {}: {e}; check that PostgreSQL runs and the URL in `database` (file {})", cfg.database_display, cfg.path.display())
        }
        Err(e) => anyhow::bail!("database {}: {e}", cfg.database_display),
    }
}
