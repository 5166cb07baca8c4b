//! `strom control-plane …`: serve the API, and the operator's offline tools
//! (first tenant, relay credentials, backup and restore, audit verification,
//! master key rotation).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use strom_control_plane::keys::{write_secret_file, MasterKeys};
use strom_control_plane::store::{RocksStore, Store, Table};
use strom_control_plane::{ControlPlane, ControlPlaneConfig, Paths};

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
    /// Mint a relay credential for an edge, origin or peer-agent.
    RelayCredential {
        /// Pseudonymous relay id, e.g. edge-fra-1.
        #[arg(long)]
        subject: String,
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
        CpCommand::Serve => ControlPlane::load(config, data_dir).await?.run().await,
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
        CpCommand::RelayCredential { subject } => {
            let (repo, _) = strom_control_plane::open_repo(&config, data_dir)?;
            println!(
                "{}",
                strom_control_plane::mint_relay_credential(&repo, &subject)?
            );
            Ok(())
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
        CpCommand::Audit {
            command: AuditCommand::Verify,
        } => {
            let paths = Paths::new(data_dir);
            let secondary = tempfile_dir(data_dir)?;
            let store = RocksStore::open_secondary(&paths.db(), &secondary, &Table::DATA)?;
            let mut broken = 0;
            for (k, _) in store.scan(Table::Tenants, b"", usize::MAX)? {
                let tenant = String::from_utf8_lossy(&k).to_string();
                let (records, findings) = strom_control_plane::audit::verify(&store, &tenant)?;
                if findings.is_empty() {
                    println!("{tenant}: {records} records, chain intact");
                } else {
                    broken += 1;
                    println!("{tenant}: {records} records, CHAIN BROKEN: {findings:?}");
                }
            }
            let _ = std::fs::remove_dir_all(&secondary);
            if broken > 0 {
                anyhow::bail!("{broken} tenant(s) with a broken audit chain");
            }
            Ok(())
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

fn tempfile_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir
        .join("control-plane")
        .join(format!("secondary-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
