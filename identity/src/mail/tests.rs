//! Tests for the mailers: the outbox on disk and SMTP against a real local sink
//! (Python 3.11's `smtpd`, see CONTROL-PLANE.md).

use super::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

fn mail(to: &str) -> Mail {
    Mail {
        to: to.into(),
        subject: "Ihr Anmeldelink für Großveranstaltung".into(),
        text: "Hallo,\n\nbitte melden Sie sich an: https://strom.example/auth/magic#t=abc_DEF-123.\nCode: 12345678\n".into(),
    }
}

#[test]
fn links_are_found_without_trailing_punctuation() {
    let text = "Link: https://a.example/x?y=1#frag. Oder (http://b.example/p), \
                nicht https:// und <https://c.example/q>\nhttps://d.example";
    assert_eq!(
        links_in(text),
        vec![
            "https://a.example/x?y=1#frag",
            "http://b.example/p",
            "https://c.example/q",
            "https://d.example"
        ]
    );
    assert!(links_in("no links here").is_empty());
    assert!(links_in("http://").is_empty());
}

#[test]
fn debug_output_hides_personal_data() {
    let m = mail("geheim@example.de");
    let shown = format!("{m:?}");
    assert!(
        !shown.contains("geheim") && !shown.contains("abc_DEF"),
        "{shown}"
    );
    let config = SmtpConfig {
        host: "mail.example".into(),
        port: 587,
        starttls: true,
        username: Some("user".into()),
        password: Some("pa55word".into()),
        from: "strom <noreply@example.de>".into(),
    };
    assert!(!format!("{config:?}").contains("pa55word"));
}

#[tokio::test]
async fn outbox_writes_private_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = FileOutbox::new(dir.path().join("outbox"));
    let path = outbox.write(&mail("anna@example.de")).await.unwrap();
    let path2 = outbox.write(&mail("bob@example.de")).await.unwrap();
    assert_ne!(path, path2);
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("eml"));
    assert!(!path.to_string_lossy().contains("anna"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("To: anna@example.de"), "{text}");
    assert!(
        text.contains("Content-Type: text/plain; charset=utf-8"),
        "{text}"
    );
    // Subject with umlauts is RFC 2047 encoded, not raw.
    assert!(
        text.contains("=?utf-8?b?") && !text.contains("Groß"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Through the trait object, as the control plane uses it.
    let mailer: Arc<dyn Mailer> = Arc::new(outbox);
    mailer.send(mail("carl@example.de")).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count(),
        3
    );
    assert_eq!(
        mailer.send(mail("not an address")).await,
        Err(MailError::InvalidRecipient)
    );
}

#[test]
fn bad_sender_is_refused_at_construction() {
    let config = SmtpConfig {
        host: "127.0.0.1".into(),
        port: 2525,
        starttls: false,
        username: None,
        password: None,
        from: "not a mailbox".into(),
    };
    assert!(matches!(
        SmtpMailer::new(config),
        Err(MailError::InvalidSender)
    ));
}

/// A local SMTP sink: Python's smtpd on a free port, appending each received
/// message to a file; rejects recipients containing "reject" with a reply that
/// quotes the address, as real servers do.
struct SmtpSink {
    child: Child,
    port: u16,
    spool: PathBuf,
    _dir: tempfile::TempDir,
}

const SINK: &str = r#"
import asyncore, smtpd, socket, sys, warnings
warnings.simplefilter("ignore")
spool = sys.argv[1]
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if any("reject" in r for r in rcpttos):
            return "550 5.1.1 <%s>: Recipient address rejected" % rcpttos[0]
        with open(spool, "ab") as f:
            f.write(b"RCPT " + ",".join(rcpttos).encode() + b"\n" + data + b"\n.\n")
server = Sink(("127.0.0.1", 0), None, decode_data=False)
print(server.socket.getsockname()[1], flush=True)
asyncore.loop(timeout=0.2)
"#;

impl SmtpSink {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let mut child = Command::new("python3")
            .args(["-c", SINK])
            .arg(&spool)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the SMTP sink (Python 3.11 with smtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("sink did not report a port: {line:?}"));
        Self {
            child,
            port,
            spool,
            _dir: dir,
        }
    }

    fn mailer(&self) -> SmtpMailer {
        SmtpMailer::new(SmtpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            starttls: false,
            username: None,
            password: None,
            from: "strom <noreply@strom.example>".into(),
        })
        .unwrap()
    }

    fn received(&self) -> String {
        std::fs::read_to_string(&self.spool).unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn smtp_mail_arrives_at_a_real_server() {
    let sink = SmtpSink::start();
    let mailer: Arc<dyn Mailer> = Arc::new(sink.mailer());
    mailer.send(mail("anna@example.de")).await.unwrap();
    // The server acknowledged DATA only after process_message wrote the spool.
    let received = sink.received();
    assert!(received.starts_with("RCPT anna@example.de\n"), "{received}");
    assert!(
        received.contains("From: strom <noreply@strom.example>"),
        "{received}"
    );
    assert!(received.contains("To: anna@example.de"), "{received}");
    let links = links_in(&received);
    assert_eq!(
        links,
        vec!["https://strom.example/auth/magic#t=abc_DEF-123"]
    );
}

#[tokio::test]
async fn smtp_rejection_is_typed_and_leaks_no_address() {
    let sink = SmtpSink::start();
    let err = sink
        .mailer()
        .send(mail("reject.me@example.de"))
        .await
        .unwrap_err();
    assert_eq!(err, MailError::Rejected { code: Some(550) });
    assert!(!err.to_string().contains("reject.me"));
    assert!(!format!("{err:?}").contains("reject.me"));
    assert_eq!(sink.received(), "");
}

#[tokio::test]
async fn smtp_unreachable_server_is_a_connection_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = SmtpMailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        starttls: false,
        username: None,
        password: None,
        from: "noreply@strom.example".into(),
    })
    .unwrap();
    assert_eq!(
        mailer.send(mail("anna@example.de")).await,
        Err(MailError::Connection)
    );
}

#[tokio::test]
async fn starttls_required_refuses_a_server_without_it() {
    // The sink does not offer STARTTLS: a mailer that requires it must not send in the clear.
    let sink = SmtpSink::start();
    let mailer = SmtpMailer::new(SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.port,
        starttls: true,
        username: Some("user".into()),
        password: Some("secret".into()),
        from: "noreply@strom.example".into(),
    })
    .unwrap();
    let err = mailer.send(mail("anna@example.de")).await.unwrap_err();
    assert!(
        matches!(
            err,
            MailError::Tls | MailError::Connection | MailError::Rejected { .. }
        ),
        "{err:?}"
    );
    assert_eq!(sink.received(), "");
}
