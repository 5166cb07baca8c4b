//! Outgoing mail (magic links, resets, invitations) behind the object-safe
//! [`Mailer`] trait: [`SmtpMailer`] for production, [`FileOutbox`] for `strom
//! dev` and tests. Recipients and bodies are personal data: nothing here logs
//! them, and [`MailError`] never carries an address or a server's free text
//! (SMTP replies often quote the recipient), only codes and categories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// A plain-text mail to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl std::fmt::Debug for Mail {
    // Debug output may end up in logs; the content is personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &"<redacted>")
            .field("subject_chars", &self.subject.chars().count())
            .field("text_chars", &self.text.chars().count())
            .finish()
    }
}

/// Why a mail was not sent. Free of addresses and server text by design.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("recipient address is not valid")]
    InvalidRecipient,
    #[error("sender address is not valid")]
    InvalidSender,
    #[error("mail could not be built")]
    Build,
    #[error("SMTP server refused the mail permanently (code {code:?})")]
    Rejected { code: Option<u16> },
    #[error("SMTP server refused the mail for now (code {code:?}); retry later")]
    Deferred { code: Option<u16> },
    #[error("SMTP TLS handshake or certificate check failed")]
    Tls,
    #[error("SMTP server did not answer in time")]
    Timeout,
    #[error("SMTP connection failed")]
    Connection,
    #[error("outbox write failed: {0}")]
    Outbox(String),
}

impl From<lettre::transport::smtp::Error> for MailError {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        let code = e.status().map(u16::from);
        if e.is_permanent() {
            MailError::Rejected { code }
        } else if e.is_transient() {
            MailError::Deferred { code }
        } else if e.is_tls() {
            MailError::Tls
        } else if e.is_timeout() {
            MailError::Timeout
        } else {
            MailError::Connection
        }
    }
}

/// Sends mail. Object safe, so the control plane can hold an `Arc<dyn Mailer>`.
pub trait Mailer: Send + Sync {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>>;
}

/// SMTP submission settings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// Upgrade with STARTTLS and refuse to send if the server cannot. When
    /// false, port 465 uses implicit TLS (RFC 8314) and any other port sends in
    /// the clear — only for a relay on the same host or a test sink.
    pub starttls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Sender, e.g. `strom <noreply@example.com>`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// Port on which a server expects TLS from the first byte.
const IMPLICIT_TLS_PORT: u16 = 465;
/// Per-command timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends through an SMTP server with lettre (rustls, OS certificate store).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// Checks the sender address and TLS parameters; connects only when sending.
    pub fn new(config: SmtpConfig) -> Result<Self, MailError> {
        let from: Mailbox = config.from.parse().map_err(|_| MailError::InvalidSender)?;
        let tls = if config.starttls || config.port == IMPLICIT_TLS_PORT {
            let parameters = TlsParameters::new(config.host.clone()).map_err(|_| MailError::Tls)?;
            if config.starttls {
                Tls::Required(parameters)
            } else {
                Tls::Wrapper(parameters)
            }
        } else {
            tracing::warn!(
                port = config.port,
                "SMTP without TLS; use only for a local relay or test sink"
            );
            Tls::None
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (config.username, config.password) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

/// Builds the RFC 5322 message; shared by every mailer so the outbox shows what SMTP would send.
fn message(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    let to: Mailbox = mail.to.parse().map_err(|_| MailError::InvalidRecipient)?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text.clone())
        .map_err(|_| MailError::Build)
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let message = message(&self.from, &mail)?;
            match self.transport.send(message).await {
                Ok(_) => {
                    tracing::debug!("mail handed to SMTP server");
                    Ok(())
                }
                Err(e) => {
                    let error = MailError::from(e);
                    tracing::warn!(%error, "mail not sent");
                    Err(error)
                }
            }
        })
    }
}

/// Writes each mail as an `.eml` file (mode 0600) into a directory, for
/// development and tests. File names carry no recipient.
pub struct FileOutbox {
    dir: PathBuf,
    from: Mailbox,
    counter: AtomicU64,
}

impl FileOutbox {
    /// An outbox in `dir` (created on first write, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            from: Mailbox::new(
                Some("strom".into()),
                lettre::Address::new_dangerous("noreply", "strom.invalid"),
            ),
            counter: AtomicU64::new(0),
        }
    }

    /// The directory mails are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the mail and returns the path of the new file.
    pub async fn write(&self, mail: &Mail) -> Result<PathBuf, MailError> {
        let bytes = message(&self.from, mail)?.formatted();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let path = self
            .dir
            .join(format!("{nanos}-{}-{n}.eml", std::process::id()));
        let dir = self.dir.clone();
        let file = path.clone();
        tokio::task::spawn_blocking(move || write_private(&dir, &file, &bytes))
            .await
            .map_err(|e| MailError::Outbox(e.to_string()))?
            .map_err(|e| MailError::Outbox(e.to_string()))?;
        Ok(path)
    }
}

fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        dirs.mode(0o700);
        options.mode(0o600);
    }
    dirs.create(dir)?;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl Mailer for FileOutbox {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move { self.write(&mail).await.map(|_| ()) })
    }
}

/// The `http://` and `https://` links in a text, in order, without trailing
/// punctuation. Lets tests and `strom dev` pick the magic link out of a mail.
pub fn links_in(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = find_scheme(rest) {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        let link = tail[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
        if link.len() > "https://".len()
            || (link.starts_with("http://") && link.len() > "http://".len())
        {
            links.push(link.to_owned());
        }
        rest = &tail[end..];
    }
    links
}

fn find_scheme(text: &str) -> Option<usize> {
    match (text.find("https://"), text.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
