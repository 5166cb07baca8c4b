//! `strom control-plane …`: serve the API, and the operator's offline tools
//! (first tenant, relay credentials, backup and restore, audit verification,
//! master key rotation).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use strom_control_plane::admin;
use strom_control_plane::repo::{CredentialRecord, SigningKeyInfo, PLATFORM};
use strom_control_plane::store::{RocksStore, Store, Table};
use strom_control_plane::RelayRole;
use strom_control_plane::{write_secret_file, MasterKeys};
use strom_control_plane::{ControlPlane, ControlPlaneConfig, Paths, StoreConfig};

#[derive(Subcommand)]
pub enum CpCommand {
    /// Serve the control-plane API.
    Serve,
    /// Create a tenant and its first owner; prints the owner's one-time password.
    Init {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        owner_email: String,
        #[arg(long)]
        owner_name: String,
    },
    /// The operator's relay credentials (origins and edges): issue, list,
    /// revoke. Talks to the running control plane through its socket, or
    /// works on the database while it is stopped.
    RelayCredential {
        #[command(subcommand)]
        command: RelayCredentialCommand,
    },
    /// The keys that sign tokens: list, rotate with a bounded overlap.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Back up the database (the control plane must be stopped: RocksDB
    /// allows one writer). Keys are kept out of data backups on purpose.
    Backup {
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore the newest backup (the control plane must be stopped).
    /// Deletions made after the backup are replayed from the journal.
    Restore {
        #[arg(long)]
        from: PathBuf,
    },
    /// Move this embedded installation (RocksDB) into PostgreSQL: copies
    /// every table and the wrapped data keys, then verifies the copy (rows
    /// and digests, every audit chain, every sealed field opened). The
    /// control plane must be stopped; the embedded database is left as it
    /// was. The target must be empty (a migration that was interrupted is
    /// cleared and done again).
    Migrate {
        /// The database, in libpq form (postgresql://user@host/db); from
        /// the environment, so that a password stays off the command line.
        #[arg(long, env = "STROM_POSTGRES_URL", hide_env_values = true)]
        to: String,
        /// Where the wrapped data keys go, when not in the same database.
        #[arg(long, env = "STROM_POSTGRES_KEYS_URL", hide_env_values = true)]
        keys_to: Option<String>,
        /// The CA (PEM) that signed the database server's certificate, for
        /// a database off this machine (reached over TLS).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Master key tools.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Tenants as a whole (the operator's side of a contract).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Delete a tenant for good: its data, its keys (so backups of it are
    /// unreadable), its tokens and agent credentials. Cannot be undone; a
    /// restore replays the deletion.
    Delete {
        /// The tenant's id (t_…).
        tenant: String,
        /// Confirms the deletion: give the tenant's id again.
        #[arg(long)]
        confirm: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum RelayCredentialCommand {
    /// Issue a credential for an origin or an edge (printed once: put it
    /// into the relay's `control_plane.credential`).
    Issue {
        #[arg(long, value_enum)]
        role: RelayRoleArg,
        /// The relay's pseudonymous id, e.g. edge-fra-1.
        #[arg(long)]
        subject: String,
    },
    /// List the issued credentials.
    List,
    /// Revoke every credential issued so far for a relay: the control
    /// plane refuses it at once, other relays within seconds.
    Revoke {
        #[arg(long)]
        subject: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RelayRoleArg {
    Origin,
    Edge,
}

#[derive(Subcommand)]
pub enum SigningKeyCommand {
    /// List the signing keys and when each stops verifying.
    List,
    /// Make a new key current. Tokens signed by the older keys keep
    /// verifying for the overlap and no longer; credentials listed as to
    /// be issued again must be, within it.
    Rotate {
        /// How long older keys keep verifying: e.g. 24h, 7d, 0 (a leaked
        /// key: everything signed with it stops at once).
        #[arg(long, default_value = "24h")]
        overlap: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify every tenant's hash chain; exits 1 if a record was altered.
    /// Works while the control plane runs (reads a secondary instance).
    Verify,
}

#[derive(Subcommand)]
pub enum MasterKeyCommand {
    /// Write a new master key file (refuses to overwrite).
    New {
        #[arg(long)]
        file: PathBuf,
    },
    /// Add a new version to the key file; a running control plane re-wraps
    /// every data key under it within seconds, without downtime.
    Rotate {
        #[arg(long)]
        file: PathBuf,
    },
}

pub async fn run(
    command: CpCommand,
    config: ControlPlaneConfig,
    data_dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).context("creating data_dir")?;
    match command {
        CpCommand::Serve => {
            ControlPlane::load(config, data_dir)
                .await?
                .run_until(strom_service::stop_requested())
                .await
        }
        CpCommand::Init {
            tenant,
            owner_email,
            owner_name,
        } => {
            let (repo, _) = strom_control_plane::open_repo(&config, data_dir)?;
            let (t, u, password) =
                strom_control_plane::bootstrap(&repo, &tenant, &owner_email, &owner_name)?;
            println!("tenant {}\nowner {}\ninitial password (shown once, must be changed at first login): {}", t.id, u.id, password.unwrap_or_default());
            Ok(())
        }
        CpCommand::RelayCredential { command } => {
            relay_credential(command, &config, data_dir).await
        }
        CpCommand::SigningKey { command } => signing_key(command, &config, data_dir).await,
        CpCommand::Tenant {
            command: TenantCommand::Delete { tenant, confirm },
        } => {
            if confirm.as_deref() != Some(tenant.as_str()) {
                anyhow::bail!(
                    "deleting {tenant} cannot be undone: repeat its id with --confirm {tenant}"
                );
            }
            let path = format!("/v1/tenants/{tenant}");
            if ask(data_dir, admin::Method::DELETE, &path, None)
                .await?
                .is_none()
            {
                strom_control_plane::open_repo(&config, data_dir)?
                    .0
                    .delete_tenant(&tenant)?;
            }
            println!("tenant {tenant} deleted");
            Ok(())
        }
        CpCommand::Backup { .. } | CpCommand::Restore { .. }
            if matches!(config.store, StoreConfig::Postgres { .. }) =>
        {
            anyhow::bail!(
                "this control plane keeps its data in PostgreSQL: back it up and restore it with \
                 PostgreSQL's tools (pg_dump -Fc -t strom_kv, or base backups with the keys in \
                 another cluster), then start the control plane, which replays later deletions \
                 from the journal (docs/control-plane.md, \"Backups on PostgreSQL\")"
            )
        }
        CpCommand::Backup { to } => {
            let paths = Paths::new(data_dir);
            let store = RocksStore::open(&paths.db(), &Table::DATA)
                .context("opening the database (is the control plane running?)")?;
            store.backup(&to)?;
            println!("backed up {} to {} (keys are not in data backups: keep {} and the master key safe separately)", paths.db().display(), to.display(), paths.keys().display());
            Ok(())
        }
        CpCommand::Restore { from } => {
            let paths = Paths::new(data_dir);
            let db = paths.db();
            if db.exists() {
                let aside = db.with_file_name(format!(
                    "db.before-restore-{}",
                    time::OffsetDateTime::now_utc().unix_timestamp()
                ));
                std::fs::rename(&db, &aside)
                    .with_context(|| format!("moving {} aside", db.display()))?;
                println!("previous database kept at {}", aside.display());
            }
            RocksStore::restore(&from, &db)?;
            let (repo, _) = strom_control_plane::open_repo(&config, data_dir)?;
            let replayed = repo.replay_journal()?;
            println!("restored; {replayed} later deletions replayed");
            Ok(())
        }
        CpCommand::Migrate {
            to,
            keys_to,
            ca_file,
        } => migrate(&config, data_dir, to, keys_to, ca_file).await,
        CpCommand::Audit {
            command: AuditCommand::Verify,
        } => {
            if let StoreConfig::Postgres { .. } = config.store {
                let data_dir = data_dir.to_path_buf();
                return tokio::task::spawn_blocking(move || {
                    let paths = Paths::new(&data_dir);
                    let (store, _) = strom_control_plane::open_stores(&config.store, &paths)?;
                    verify_audit(&*store)
                })
                .await?;
            }
            let paths = Paths::new(data_dir);
            let secondary = tempfile_dir(data_dir)?;
            let store = RocksStore::open_secondary(&paths.db(), &secondary, &Table::DATA)?;
            let verified = verify_audit(&store);
            let _ = std::fs::remove_dir_all(&secondary);
            verified
        }
        CpCommand::MasterKey {
            command: MasterKeyCommand::New { file },
        } => {
            if file.exists() {
                anyhow::bail!("{} exists; use `rotate` to add a version", file.display());
            }
            write_secret_file(&file, MasterKeys::generate().to_text().as_bytes())?;
            println!("wrote {} (mode 0600)", file.display());
            Ok(())
        }
        CpCommand::MasterKey {
            command: MasterKeyCommand::Rotate { file },
        } => {
            let keys = MasterKeys::parse(
                &std::fs::read_to_string(&file).with_context(|| file.display().to_string())?,
            )?;
            let rotated = keys.rotated();
            write_secret_file(&file, rotated.to_text().as_bytes())?;
            println!(
                "added master key v{} to {}; the running control plane re-wraps data keys under it",
                rotated.current().0,
                file.display()
            );
            Ok(())
        }
    }
}

/// Asks the running control plane (its operator socket); `None` when it is
/// not running, so the caller opens the database itself.
async fn ask(
    data_dir: &Path,
    method: admin::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let socket = admin::socket_path(data_dir);
    match admin::call(&socket, method, path, body).await? {
        None => Ok(None),
        Some((status, value)) if status < 300 => Ok(Some(value)),
        Some((status, value)) => {
            let detail = value
                .get("detail")
                .and_then(|d| d.as_str())
                .map(str::to_owned);
            anyhow::bail!(
                "the control plane refused ({status}): {}",
                detail.unwrap_or_else(|| value.to_string())
            )
        }
    }
}

async fn relay_credential(
    command: RelayCredentialCommand,
    config: &ControlPlaneConfig,
    data_dir: &Path,
) -> anyhow::Result<()> {
    use admin::Method;
    let records: Vec<CredentialRecord> = match command {
        RelayCredentialCommand::Issue { role, subject } => {
            let role = match role {
                RelayRoleArg::Origin => RelayRole::Origin,
                RelayRoleArg::Edge => RelayRole::Edge,
            };
            let issued: admin::Issued = match ask(
                data_dir,
                Method::POST,
                "/v1/relay-credentials",
                Some(serde_json::to_value(admin::IssueRequest {
                    role,
                    subject: subject.clone(),
                })?),
            )
            .await?
            {
                Some(v) => serde_json::from_value(v)?,
                None => {
                    let (repo, _) = strom_control_plane::open_repo(config, data_dir)?;
                    let (credential, record) =
                        repo.issue_relay_credential("operator", role, &subject)?;
                    admin::Issued { credential, record }
                }
            };
            println!("{}", issued.credential);
            return Ok(());
        }
        RelayCredentialCommand::List => {
            match ask(data_dir, Method::GET, "/v1/relay-credentials", None).await? {
                Some(v) => serde_json::from_value(v)?,
                None => strom_control_plane::open_repo(config, data_dir)?
                    .0
                    .credentials(PLATFORM)?,
            }
        }
        RelayCredentialCommand::Revoke { subject } => {
            let record: CredentialRecord = match ask(
                data_dir,
                Method::DELETE,
                &format!("/v1/relay-credentials/{subject}"),
                None,
            )
            .await?
            {
                Some(v) => serde_json::from_value(v)?,
                None => strom_control_plane::open_repo(config, data_dir)?
                    .0
                    .revoke_credential("operator", PLATFORM, &subject)?,
            };
            println!("revoked every credential of {} issued until now", record.id);
            vec![record]
        }
    };
    println!(
        "{:<24} {:<7} {:<5} {:<26} {:<26} key",
        "subject", "role", "count", "issued", "revoked"
    );
    for r in records {
        println!(
            "{:<24} {:<7} {:<5} {:<26} {:<26} {}",
            r.id,
            format!("{:?}", r.kind).to_lowercase(),
            r.issued,
            rfc3339(r.issued_at),
            r.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            r.kid
        );
    }
    Ok(())
}

async fn signing_key(
    command: SigningKeyCommand,
    config: &ControlPlaneConfig,
    data_dir: &Path,
) -> anyhow::Result<()> {
    use admin::Method;
    let keys: Vec<SigningKeyInfo> = match command {
        SigningKeyCommand::List => {
            match ask(data_dir, Method::GET, "/v1/signing-keys", None).await? {
                Some(v) => serde_json::from_value(v)?,
                None => strom_control_plane::open_repo(config, data_dir)?
                    .0
                    .signing_keys(),
            }
        }
        SigningKeyCommand::Rotate { overlap } => {
            let overlap_secs = parse_duration(&overlap)?;
            let rotated: admin::Rotated = match ask(
                data_dir,
                Method::POST,
                "/v1/signing-keys/rotate",
                Some(serde_json::json!({"overlap_secs": overlap_secs})),
            )
            .await?
            {
                Some(v) => serde_json::from_value(v)?,
                None => admin::rotate_now(
                    &strom_control_plane::open_repo(config, data_dir)?.0,
                    overlap_secs,
                )?,
            };
            println!(
                "new signing key {}; older keys stop verifying in {overlap}",
                rotated.kid
            );
            if !rotated.reissue.is_empty() {
                println!("issue these credentials again before then:");
                for c in &rotated.reissue {
                    println!("  {} {} ({:?})", c.tenant, c.id, c.kind);
                }
            }
            rotated.keys
        }
    };
    for k in keys {
        println!(
            "{} created {} {}",
            k.kid,
            rfc3339(k.created_at),
            match (k.current, k.retire_at) {
                (true, _) => "current".to_owned(),
                (false, Some(at)) => format!("verifies until {}", rfc3339(at)),
                (false, None) => "verifies".to_owned(),
            }
        );
    }
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `90s`, `30m`, `24h`, `7d` or plain seconds.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a duration like 24h, 7d or 0"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("{text:?} is not a duration like 24h, 7d or 0"),
    };
    n.checked_mul(factor)
        .ok_or_else(|| anyhow::anyhow!("{text:?} is too long"))
}

fn tempfile_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir
        .join("control-plane")
        .join(format!("secondary-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Every tenant's hash chain; an error when one is broken.
fn verify_audit(store: &dyn Store) -> anyhow::Result<()> {
    let mut broken = 0;
    for (k, _) in store.scan(Table::Tenants, b"", usize::MAX)? {
        let tenant = String::from_utf8_lossy(&k).to_string();
        let (records, findings) = strom_control_plane::verify_audit_trail(store, &tenant)?;
        if findings.is_empty() {
            println!("{tenant}: {records} records, chain intact");
        } else {
            broken += 1;
            println!("{tenant}: {records} records, CHAIN BROKEN: {findings:?}");
        }
    }
    if broken > 0 {
        anyhow::bail!("{broken} tenant(s) with a broken audit chain");
    }
    Ok(())
}

/// `strom control-plane migrate`: the embedded stores into PostgreSQL.
async fn migrate(
    config: &ControlPlaneConfig,
    data_dir: &Path,
    to: String,
    keys_to: Option<String>,
    ca_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use strom_control_plane::migrate::{self, Stores};
    use strom_control_plane::store::PgStore;

    if !matches!(config.store, StoreConfig::Rocksdb) {
        anyhow::bail!(
            "migrate copies the embedded store (RocksDB) into PostgreSQL; \
             this configuration's [control_plane.store] already names PostgreSQL"
        );
    }
    let paths = Paths::new(data_dir);
    for dir in [paths.db(), paths.keys()] {
        if !dir.join("CURRENT").exists() {
            anyhow::bail!(
                "no embedded control-plane database at {} (is data_dir right?)",
                dir.display()
            );
        }
    }
    let master_file = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| paths.master_key());
    let master = MasterKeys::load(&master_file, false)
        .with_context(|| format!("master key {}", master_file.display()))?;
    let stopped = "opening the embedded database (stop the control plane first)";
    let source = Stores {
        data: Arc::new(RocksStore::open(&paths.db(), &Table::DATA).context(stopped)?),
        keys: Arc::new(RocksStore::open(&paths.keys(), &Table::KEYS).context(stopped)?),
    };
    let migrated = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let keys_to = keys_to.unwrap_or_else(|| to.clone());
        let target = Stores {
            data: Arc::new(
                PgStore::connect_with(&to, "strom_kv", ca_file.as_deref())
                    .context("connecting to PostgreSQL")?,
            ),
            keys: Arc::new(
                PgStore::connect_with(&keys_to, "strom_keys", ca_file.as_deref())
                    .context("connecting to PostgreSQL (key store)")?,
            ),
        };
        let mut last = None;
        let migrated = migrate::migrate(&source, &target, master, &mut |t, rows| {
            if last.is_some_and(|l| l != t) || rows % 10_000 == 0 {
                eprintln!("copying {}: {rows} rows", t.name());
            }
            last = Some(t);
        })?;
        Ok(migrated)
    })
    .await??;
    if migrated.resumed {
        println!("an interrupted migration's rows were cleared first");
    }
    println!("copied and verified (rows, SHA-256 of every table):");
    for f in &migrated.tables {
        println!("  {:<12} {:>9} rows", f.table.name(), f.rows);
    }
    for (tenant, records) in &migrated.audit {
        println!("audit chain of {tenant}: {records} records, intact");
    }
    println!(
        "sealed fields opened with the master key: {} users, {} participants",
        migrated.users_opened, migrated.participants_opened
    );
    println!(
        "The embedded database in {} is unchanged. To serve from PostgreSQL, set\n  \
         [control_plane.store]\n  kind = \"postgres\"\n\
         and STROM_POSTGRES_URL (or url = ...), and start the control plane.",
        paths.db().display()
    );
    Ok(())
}
