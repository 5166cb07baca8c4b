//! The PostgreSQL store: the same ordered tables as RocksDB, as rows of one
//! relation `(tbl, k, v)` keyed by table and key, so every repository rule
//! above the [`Store`] trait runs unchanged on either backend.
//!
//! Several control-plane replicas share one database. What one process's
//! write lock guarantees today (a link used once, lockout counted across
//! attempts, one audit chain without forks) holds across replicas because
//! [`Store::exclusive`] takes a PostgreSQL session advisory lock on a
//! connection of its own, and every batch written while it is held goes
//! through that same connection: should the connection break, the lock is
//! gone *and* the section's write fails, so no replica ever writes on a lock
//! it no longer holds.
//!
//! The trait is synchronous (the repository runs on blocking threads); the
//! store drives tokio-postgres on a small runtime of its own, so it may be
//! called from any thread without blocking the caller's runtime workers on
//! a runtime they drive.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::presence::{Counted, Presence, Present};
use super::{prefix_end, Batch, Exclusive, KeyValue, Op, Store, StoreError, Table};

/// Migrations, applied in order at start (each once, recorded in
/// `strom_migrations`). `{rel}` is the store's relation name.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_kv.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_presence.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_counters.sql"),
    ),
];

/// Every this many presence writes, expired entries are deleted.
const PRESENCE_SWEEP_EVERY: u64 = 256;

/// Advisory lock keys (one 64-bit space per database): start-up migrations,
/// and the write section of each relation (hashed into the second half).
const MIGRATION_LOCK: i64 = 0x5374_726f_6d00_0001;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message where there is one (never the parameters:
        // they may hold sealed personal data); else the error and its
        // causes (a TLS handshake's reason).
        match e.as_db_error() {
            Some(db) => StoreError::Backend(format!("postgresql: {}", db.message())),
            None => {
                let mut text = format!("postgresql: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                StoreError::Backend(text)
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // Connecting failed: say why (refused, authentication, TLS).
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Backend(format!("postgresql pool: {other}")),
        }
    }
}

struct Held {
    thread: std::thread::ThreadId,
    client: Object,
}

pub struct PgStore {
    /// Taken only on drop (a runtime must not be dropped on a runtime's
    /// thread).
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// The relation holding this store's tables (data and keys live apart).
    rel: String,
    section_key: i64,
    /// The connection holding the advisory lock while a section is open,
    /// and the thread that opened it: only that thread's writes go through
    /// it (other threads write outside the section, on pooled
    /// connections, as they would on RocksDB).
    held: Mutex<Option<Held>>,
    /// Whether a thread of this process has the section or is taking it:
    /// the others wait here, not in the database on a pooled connection
    /// each (sixteen waiters there would hold every connection the
    /// section's holder needs for its reads).
    busy: Mutex<bool>,
    free: std::sync::Condvar,
    presence_puts: std::sync::atomic::AtomicU64,
}

impl PgStore {
    /// Connects (`url` in libpq form, e.g.
    /// `postgresql://strom@db.example/strom`), applies pending migrations
    /// and checks the relation. `relation` is `strom_kv` for the data,
    /// `strom_keys` for the key store.
    pub fn connect(url: &str, relation: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, relation, None)
    }

    /// Like [`PgStore::connect`], over TLS where [`tls_plan`] says so,
    /// verifying the server against the CAs in `ca_file` (PEM).
    pub fn connect_with(
        url: &str,
        relation: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        if relation.is_empty()
            || !relation
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            return Err(StoreError::Backend(format!(
                "relation name {relation:?}: lower-case letters, digits and _ only"
            )));
        }
        let (mut config, plan) = tls_plan(url)?;
        if let TlsPlan::PlainToRemote(host) = &plan {
            tracing::warn!(%host, "plain connection to PostgreSQL (sslmode=disable): personal data crosses the network unencrypted");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strom-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgresql runtime: {e}")))?;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match plan {
            TlsPlan::Tls => {
                let Some(ca_file) = ca_file else {
                    return Err(StoreError::Backend(
                        "PostgreSQL over the network is reached over TLS: set [control_plane.store] ca_file \
                         to the CA that signed the server's certificate (or sslmode=disable in the url, \
                         on a network you trust)"
                            .into(),
                    ));
                };
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = client_tls(ca_file)?;
                Manager::from_config(
                    config,
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                    manager_config(),
                )
            }
            TlsPlan::Plain | TlsPlan::PlainToRemote(_) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(config, NoTls, manager_config())
            }
        };
        let pool = {
            let _enter = rt.enter();
            Pool::builder(manager)
                .max_size(16)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(std::time::Duration::from_secs(10)))
                .wait_timeout(Some(std::time::Duration::from_secs(30)))
                .build()
                .map_err(|e| StoreError::Backend(format!("postgresql pool: {e}")))?
        };
        let section_key = MIGRATION_LOCK
            ^ i64::from_be_bytes(
                <sha2::Sha256 as sha2::Digest>::digest(relation.as_bytes())[..8]
                    .try_into()
                    .expect("8 bytes"),
            );
        let store = Self {
            handle: rt.handle().clone(),
            rt: Some(rt),
            pool,
            rel: relation.to_owned(),
            section_key,
            held: Mutex::new(None),
            busy: Mutex::new(false),
            free: std::sync::Condvar::new(),
            presence_puts: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Backend("postgresql: the store's runtime stopped".into()))?
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let rel = self.rel.clone();
        self.run(async move {
            let mut client = pool.get().await?;
            // One replica migrates at a time; the others wait and find
            // the work done.
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let result = async {
                client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS strom_migrations (
                            relation text NOT NULL,
                            version integer NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now(),
                            PRIMARY KEY (relation, version))",
                    )
                    .await?;
                for (version, sql) in MIGRATIONS {
                    let done = client
                        .query_opt(
                            "SELECT 1 FROM strom_migrations WHERE relation = $1 AND version = $2",
                            &[&rel, version],
                        )
                        .await?
                        .is_some();
                    if done {
                        continue;
                    }
                    let tx = client.transaction().await?;
                    tx.batch_execute(&sql.replace("{rel}", &rel)).await?;
                    tx.execute(
                        "INSERT INTO strom_migrations (relation, version) VALUES ($1, $2)",
                        &[&rel, version],
                    )
                    .await?;
                    tx.commit().await?;
                    tracing::info!(relation = %rel, version, "postgresql migration applied");
                }
                Ok::<_, StoreError>(())
            }
            .await;
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await?;
            result
        })
    }

    /// The next thread of this process may take the section.
    fn leave(&self) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.free.notify_one();
    }

    fn held(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Rows with key in `[start, end)` (or `(start, end)` when `exclusive`).
fn range_sql(rel: &str, exclusive: bool, bounded: bool) -> String {
    format!(
        "SELECT k, v FROM {rel} WHERE tbl = $1 AND k {} $2{} ORDER BY k LIMIT $3",
        if exclusive { ">" } else { ">=" },
        if bounded { " AND k < $4" } else { "" },
    )
}

/// How a connection string is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsPlan {
    /// Unix sockets, or loopback without `sslmode`: no TLS.
    Plain,
    /// `sslmode=disable` to a host off this machine (allowed; warned).
    PlainToRemote(String),
    /// TLS required and the server verified (certificate chain and name),
    /// whatever `sslmode` short of `disable` says: `prefer` would let an
    /// attacker on the path answer "no TLS", and libpq's `require` does not
    /// check the certificate.
    Tls,
}

/// Parses `url` and decides on TLS: a host off this machine gets TLS
/// unless the URL says `sslmode=disable`; loopback gets it when `sslmode`
/// asks; Unix sockets never (PostgreSQL has no TLS there). libpq's
/// `verify-ca` and `verify-full` are accepted (what strom always does).
pub(crate) fn tls_plan(url: &str) -> Result<(tokio_postgres::Config, TlsPlan), StoreError> {
    let mode = explicit_ssl_mode(url);
    let normalised = match mode.as_deref() {
        Some("verify-ca" | "verify-full") => url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require"),
        _ => url.to_owned(),
    };
    let config: tokio_postgres::Config = normalised
        .parse()
        .map_err(|e| StoreError::Backend(format!("postgresql url: {e}")))?;
    let tcp: Vec<&str> = config
        .get_hosts()
        .iter()
        .filter_map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => Some(name.as_str()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect();
    let remote = tcp.iter().find(|h| !is_loopback(h)).map(|h| h.to_string());
    let plan = match (mode.as_deref(), remote) {
        _ if tcp.is_empty() => TlsPlan::Plain,
        (Some("disable"), Some(host)) => TlsPlan::PlainToRemote(host),
        (Some("disable"), None) => TlsPlan::Plain,
        (None | Some("prefer"), None) => TlsPlan::Plain,
        _ => TlsPlan::Tls,
    };
    Ok((config, plan))
}

/// A rustls client trusting the CAs in `ca_file` (PEM) and nothing else.
fn client_tls(ca_file: &Path) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let fail = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!(
            "postgresql TLS, ca_file {}: {e}",
            ca_file.display()
        ))
    };
    let pem = std::fs::read(ca_file).map_err(|e| fail(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| fail(&e))?)
            .map_err(|e| fail(&e))?;
    }
    if roots.is_empty() {
        return Err(fail(&"holds no certificate"));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn explicit_ssl_mode(url: &str) -> Option<String> {
    let at = url.find("sslmode=")? + "sslmode=".len();
    Some(
        url[at..]
            .chars()
            .take_while(|c| !matches!(c, '&' | ' ' | '#'))
            .collect(),
    )
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn write_batch(client: &mut Object, rel: &str, batch: Batch) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    let put = tx
        .prepare_cached(&format!(
            "INSERT INTO {rel} (tbl, k, v) VALUES ($1, $2, $3)
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v"
        ))
        .await?;
    let delete = tx
        .prepare_cached(&format!("DELETE FROM {rel} WHERE tbl = $1 AND k = $2"))
        .await?;
    for op in batch.ops {
        match op {
            Op::Put(t, k, v) => {
                tx.execute(&put, &[&t.name(), &k, &v]).await?;
            }
            Op::Delete(t, k) => {
                tx.execute(&delete, &[&t.name(), &k]).await?;
            }
            Op::DeletePrefix(t, p) => match prefix_end(&p) {
                Some(end) => {
                    tx.execute(
                        &format!("DELETE FROM {rel} WHERE tbl = $1 AND k >= $2 AND k < $3"),
                        &[&t.name(), &p, &end],
                    )
                    .await?;
                }
                // Dropping the transaction rolls it back.
                None => return Err(StoreError::Backend("empty prefix delete refused".into())),
            },
        }
    }
    tx.commit().await?;
    Ok(())
}

impl Store for PgStore {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (pool, sql, key) = (
            self.pool.clone(),
            format!("SELECT v FROM {} WHERE tbl = $1 AND k = $2", self.rel),
            key.to_vec(),
        );
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let row = client.query_opt(&stmt, &[&t.name(), &key]).await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn scan(&self, t: Table, prefix: &[u8], limit_n: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.scan_range(t, prefix, prefix, false, limit_n)
    }

    fn scan_after(
        &self,
        t: Table,
        prefix: &[u8],
        after: &[u8],
        limit_n: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = if after < prefix { prefix } else { after };
        self.scan_range(t, prefix, start, start == after, limit_n)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut held = self.held();
        let mine = held
            .as_ref()
            .is_some_and(|h| h.thread == std::thread::current().id());
        if let Some(Held { thread, client }) = mine.then(|| held.take()).flatten() {
            // Inside this thread's section: on the connection that holds
            // the lock (the slot stays taken while it writes, so the lock
            // is not released under it).
            let rel = self.rel.clone();
            let (result, client) = self.run(async move {
                let mut client = client;
                let result = write_batch(&mut client, &rel, batch).await;
                Ok((result, client))
            })?;
            *held = Some(Held { thread, client });
            return result;
        }
        drop(held);
        let (pool, rel) = (self.pool.clone(), self.rel.clone());
        self.run(async move {
            let mut client = pool.get().await?;
            write_batch(&mut client, &rel, batch).await
        })
    }

    fn exclusive(&self) -> Result<Exclusive<'_>, StoreError> {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            while *busy {
                busy = self.free.wait(busy).unwrap_or_else(|p| p.into_inner());
            }
            *busy = true;
        }
        let (pool, key) = (self.pool.clone(), self.section_key);
        let client = match self.run(async move {
            let client = pool.get().await?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .await?;
            Ok(client)
        }) {
            Ok(client) => client,
            Err(e) => {
                self.leave();
                return Err(e);
            }
        };
        let thread = std::thread::current().id();
        let previous = self.held().replace(Held { thread, client });
        debug_assert!(previous.is_none(), "write sections do not nest");
        Ok(Exclusive::new(move || {
            let Some(Held { client, .. }) = self.held().take() else {
                self.leave();
                return;
            };
            let unlocked = self.run(async move {
                match client
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        // Never back into the pool with the lock possibly
                        // still held: close the session, and the lock goes
                        // with it.
                        drop(Object::take(client));
                        Err(e.into())
                    }
                }
            });
            if let Err(e) = unlocked {
                tracing::warn!(error = %e, "postgresql: releasing the write section failed");
            }
            self.leave();
        }))
    }

    fn shared_presence(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn Presence>> {
        Some(self)
    }

    fn backup(&self, _dir: &Path) -> Result<(), StoreError> {
        Err(StoreError::Backend(
            "a PostgreSQL store is backed up with PostgreSQL's own tools \
             (pg_basebackup, WAL archiving, or the managed service's backups)"
                .into(),
        ))
    }
}

impl Presence for PgStore {
    fn put(
        &self,
        kind: &str,
        key: &str,
        value: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let rel = &self.rel;
        let sql = format!(
            "INSERT INTO {rel}_presence (kind, k, v, put_at, expires_at)
             VALUES ($1, $2, $3, now(), now() + $4::float8 * interval '1 second')
             ON CONFLICT (kind, k) DO UPDATE
             SET v = excluded.v, put_at = excluded.put_at, expires_at = excluded.expires_at"
        );
        let sweep = self
            .presence_puts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(PRESENCE_SWEEP_EVERY);
        let sweep_sql = format!("DELETE FROM {rel}_presence WHERE expires_at < now()");
        let (pool, kind, key, value) = (
            self.pool.clone(),
            kind.to_owned(),
            key.to_owned(),
            value.to_vec(),
        );
        let ttl = ttl.as_secs_f64();
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            client.execute(&stmt, &[&kind, &key, &value, &ttl]).await?;
            if sweep {
                client.execute(&sweep_sql, &[]).await?;
            }
            Ok(())
        })
    }

    fn get(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError> {
        let sql = format!(
            "SELECT k, v, extract(epoch FROM now() - put_at)::float8 FROM {}_presence
             WHERE kind = $1 AND k = $2 AND expires_at > now()",
            self.rel
        );
        let (pool, kind, key) = (self.pool.clone(), kind.to_owned(), key.to_owned());
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            Ok(client.query_opt(&stmt, &[&kind, &key]).await?.map(present))
        })
    }

    fn remove(&self, kind: &str, key: &str) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM {}_presence WHERE kind = $1 AND k = $2",
            self.rel
        );
        let (pool, kind, key) = (self.pool.clone(), kind.to_owned(), key.to_owned());
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            client.execute(&stmt, &[&kind, &key]).await?;
            Ok(())
        })
    }

    fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Present>, StoreError> {
        // Keys compare byte by byte (COLLATE "C"), so a prefix is a range
        // of the primary key.
        let end = super::presence::prefix_end(prefix);
        let sql = format!(
            "SELECT k, v, extract(epoch FROM now() - put_at)::float8 FROM {}_presence
             WHERE kind = $1 AND k >= $2{} AND expires_at > now() ORDER BY k",
            self.rel,
            if end.is_some() { " AND k < $3" } else { "" }
        );
        let (pool, kind, start) = (self.pool.clone(), kind.to_owned(), prefix.to_owned());
        let prefix = prefix.to_owned();
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = match &end {
                Some(end) => client.query(&stmt, &[&kind, &start, end]).await?,
                None => client.query(&stmt, &[&kind, &start]).await?,
            };
            Ok(rows
                .into_iter()
                .map(present)
                .filter(|p| p.key.starts_with(&prefix))
                .collect())
        })
    }

    fn take(&self, kind: &str, key: &str) -> Result<Option<Present>, StoreError> {
        // One DELETE: of several replicas taking a key at once, one
        // statement deletes the row and the others find none.
        let sql = format!(
            "DELETE FROM {}_presence WHERE kind = $1 AND k = $2
             RETURNING k, v, extract(epoch FROM now() - put_at)::float8, expires_at > now()",
            self.rel
        );
        let (pool, kind, key) = (self.pool.clone(), kind.to_owned(), key.to_owned());
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            Ok(client
                .query_opt(&stmt, &[&kind, &key])
                .await?
                .filter(|r| r.get::<_, bool>(3))
                .map(present))
        })
    }

    fn count(
        &self,
        kind: &str,
        key: &str,
        window: std::time::Duration,
    ) -> Result<Counted, StoreError> {
        // The upsert locks the row, so concurrent hits queue and each
        // counts; a window that ended starts again at this hit.
        let rel = &self.rel;
        let sql = format!(
            "INSERT INTO {rel}_counters AS c (kind, k, hits, window_end)
             VALUES ($1, $2, 1, now() + $3::float8 * interval '1 second')
             ON CONFLICT (kind, k) DO UPDATE SET
               hits = CASE WHEN c.window_end <= now() THEN 1 ELSE c.hits + 1 END,
               window_end = CASE WHEN c.window_end <= now() THEN excluded.window_end
                            ELSE c.window_end END
             RETURNING hits, extract(epoch FROM window_end - now())::float8"
        );
        let sweep = self
            .presence_puts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(PRESENCE_SWEEP_EVERY);
        let sweep_sql = format!("DELETE FROM {rel}_counters WHERE window_end < now()");
        let (pool, kind, key) = (self.pool.clone(), kind.to_owned(), key.to_owned());
        let window = window.as_secs_f64();
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let row = client.query_one(&stmt, &[&kind, &key, &window]).await?;
            if sweep {
                client.execute(&sweep_sql, &[]).await?;
            }
            Ok(Counted {
                hits: row.get::<_, i64>(0).max(0) as u64,
                left: std::time::Duration::from_secs_f64(row.get::<_, f64>(1).max(0.0)),
            })
        })
    }
}

fn present(r: tokio_postgres::Row) -> Present {
    Present {
        key: r.get(0),
        value: r.get(1),
        age: std::time::Duration::from_secs_f64(r.get::<_, f64>(2).max(0.0)),
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    fn scan_range(
        &self,
        t: Table,
        prefix: &[u8],
        start: &[u8],
        exclusive: bool,
        limit_n: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(prefix);
        let sql = range_sql(&self.rel, exclusive, end.is_some());
        let (pool, start, n) = (self.pool.clone(), start.to_vec(), limit(limit_n));
        self.run(async move {
            let client = pool.get().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let rows = match &end {
                Some(end) => client.query(&stmt, &[&t.name(), &start, &n, end]).await?,
                None => client.query(&stmt, &[&t.name(), &start, &n]).await?,
            };
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_off_this_machine_unless_disabled_in_so_many_words() {
        let remote = |h: &str| TlsPlan::PlainToRemote(h.to_owned());
        let cases: [(&str, Result<TlsPlan, ()>); 14] = [
            (
                "host=/run/postgresql user=strom dbname=strom",
                Ok(TlsPlan::Plain),
            ),
            (
                "host=/run/postgresql sslmode=require dbname=strom",
                Ok(TlsPlan::Plain),
            ),
            ("postgresql://strom@localhost/strom", Ok(TlsPlan::Plain)),
            (
                "postgresql://strom@127.0.0.1:5433/strom",
                Ok(TlsPlan::Plain),
            ),
            ("postgresql://strom@[::1]/strom", Ok(TlsPlan::Plain)),
            (
                "postgresql://strom@localhost/strom?sslmode=require",
                Ok(TlsPlan::Tls),
            ),
            ("postgresql://strom@db.example/strom", Ok(TlsPlan::Tls)),
            (
                "postgresql://strom@db.example/strom?sslmode=prefer",
                Ok(TlsPlan::Tls),
            ),
            ("postgresql://strom@10.0.0.5/strom?sslmode=allow", Err(())),
            (
                "host=db.example sslmode=verify-full dbname=strom",
                Ok(TlsPlan::Tls),
            ),
            (
                "postgresql://strom@db.example/strom?sslmode=verify-ca&application_name=cp",
                Ok(TlsPlan::Tls),
            ),
            (
                "postgresql://strom@db.example/strom?sslmode=disable",
                Ok(remote("db.example")),
            ),
            (
                "host=localhost,db.example sslmode=disable",
                Ok(remote("db.example")),
            ),
            (
                "postgresql://strom@db.example/strom?sslmode=sometimes",
                Err(()),
            ),
        ];
        for (url, want) in cases {
            let got = tls_plan(url).map(|(_, plan)| plan).map_err(|_| ());
            assert_eq!(got, want, "{url}");
        }
    }
}
