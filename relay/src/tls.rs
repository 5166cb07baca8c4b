//! TLS for every hop: certificates (generated for development, loaded in
//! production), server configurations for QUIC and HTTPS, and client
//! configurations that trust either a CA bundle or one pinned certificate hash.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Browsers accept a pinned (`serverCertificateHashes`) certificate only if it
/// is ECDSA and valid for at most 14 days; we stay a day under that.
pub const DEV_CERT_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain with its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads PEM files.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("reading certificate {}", cert.display()))?;
        let key_pem =
            std::fs::read(key).with_context(|| format!("reading key {}", key.display()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing certificate {}", cert.display()))?;
        if chain.is_empty() {
            bail!("{} holds no certificate", cert.display());
        }
        // The first private key (PKCS#8, PKCS#1 or SEC1); other sections are
        // skipped.
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(k) => k,
            Err(pem::Error::NoItemsFound) => bail!("{} holds no private key", key.display()),
            Err(e) => {
                return Err(e).with_context(|| format!("parsing key {}", key.display()));
            }
        };
        Ok(Self { chain, key })
    }

    /// Loads the development certificate in `dir`, generating a new one when it
    /// is missing or expires within two days.
    pub fn dev(dir: &Path, names: &[String]) -> anyhow::Result<Self> {
        let cert = dir.join("dev-cert.pem");
        let key = dir.join("dev-key.pem");
        if let Ok(identity) = Self::load(&cert, &key) {
            if identity.valid_for_at_least(Duration::from_secs(2 * 24 * 3600)) {
                return Ok(identity);
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert_pem, key_pem) = generate_self_signed(names, DEV_CERT_VALIDITY)?;
        std::fs::write(&cert, cert_pem)?;
        write_private(&key, key_pem.as_bytes())?;
        Self::load(&cert, &key)
    }

    fn valid_for_at_least(&self, margin: Duration) -> bool {
        let Some(der) = self.chain.first() else {
            return false;
        };
        match x509_not_after(der) {
            Some(not_after) => {
                let now = time::OffsetDateTime::now_utc();
                not_after - now > time::Duration::try_from(margin).unwrap_or(time::Duration::ZERO)
            }
            None => false,
        }
    }

    /// SHA-256 of the leaf certificate, as browsers pin it.
    pub fn sha256(&self) -> [u8; 32] {
        let leaf = self.chain.first().map(|c| c.as_ref()).unwrap_or(&[]);
        Sha256::digest(leaf).into()
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256())
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("certificate and key do not match")?;
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(config)
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// A self-signed ECDSA P-256 certificate for `names`, valid from an hour ago.
pub fn generate_self_signed(
    names: &[String],
    validity: Duration,
) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now - time::Duration::hours(1)
        + time::Duration::try_from(validity).context("validity out of range")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "strom development");
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Reads notAfter from a DER certificate (enough of X.509 for our own certs).
fn x509_not_after(der: &[u8]) -> Option<time::OffsetDateTime> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial,
    // signature AlgId, issuer Name, validity SEQUENCE { notBefore, notAfter } ...
    let (cert, _) = der_seq(der)?;
    let (tbs, _) = der_seq(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_skip(rest)?;
    }
    rest = der_skip(rest)?; // serial
    rest = der_skip(rest)?; // signature algorithm
    rest = der_skip(rest)?; // issuer
    let (validity, _) = der_seq(rest)?;
    let after = der_skip(validity)?;
    let (tag, body, _) = der_tlv(after)?;
    let text = std::str::from_utf8(body).ok()?;
    let (year, rest) = match tag {
        0x17 => (2000 + text.get(0..2)?.parse::<i32>().ok()?, text.get(2..)?),
        0x18 => (text.get(0..4)?.parse::<i32>().ok()?, text.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| rest.get(r)?.parse::<u8>().ok();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(num(0..2)?).ok()?, num(2..4)?)
            .ok()?;
    let t = time::Time::from_hms(num(4..6)?, num(6..8)?, num(8..10)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

fn der_tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *data.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = data.get(header..header.checked_add(len)?)?;
    Some((tag, body, &data[header + len..]))
}

fn der_seq(data: &[u8]) -> Option<(&[u8], &[u8])> {
    match der_tlv(data)? {
        (0x30, body, rest) => Some((body, rest)),
        _ => None,
    }
}

fn der_skip(data: &[u8]) -> Option<&[u8]> {
    der_tlv(data).map(|(_, _, rest)| rest)
}

pub fn parse_hex32(text: &str) -> anyhow::Result<[u8; 32]> {
    let clean: String = text.chars().filter(|c| *c != ':').collect();
    if clean.len() != 64 || !clean.is_ascii() {
        bail!(
            "a SHA-256 fingerprint has 64 hex digits, got {}",
            clean.len()
        );
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out).with_context(|| format!("{text:?} is not hex"))?;
    Ok(out)
}

/// How a client decides to trust a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The platform's usual roots are not bundled; a CA file must be given.
    #[default]
    None,
    /// Certificates issued by the CAs in this PEM file.
    CaFile(std::path::PathBuf),
    /// Exactly the certificate with this SHA-256 (as browsers pin WebTransport).
    Pinned([u8; 32]),
}

pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::None => {
            bail!("no trust configured for upstream TLS: set a CA file or a certificate SHA-256")
        }
        Trust::CaFile(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA file {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.with_context(|| format!("parsing CA file {}", path.display()))?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pinned(hash) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                hash: *hash,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// Accepts exactly one certificate, identified by its SHA-256, and checks that
/// the handshake was signed by its key.
#[derive(Debug)]
struct PinnedVerifier {
    hash: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.hash {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate SHA-256 {} is not the pinned {}",
                hex::encode(got),
                hex::encode(self.hash)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_short_lived_ecdsa_and_reloads() {
        let dir = std::env::temp_dir().join(format!("strom-tls-{}", std::process::id()));
        let a = Identity::dev(&dir, &["localhost".into()]).unwrap();
        let b = Identity::dev(&dir, &["localhost".into()]).unwrap();
        assert_eq!(a.sha256(), b.sha256(), "a valid certificate is reused");
        let not_after = x509_not_after(&a.chain[0]).unwrap();
        let days = (not_after - time::OffsetDateTime::now_utc()).whole_days();
        assert!((12..14).contains(&days), "valid for {days} days");
        assert!(a.server_config(&[b"h3"]).is_ok());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn pem_files_load_chains_keys_and_ca_bundles() {
        let dir = std::env::temp_dir().join(format!("strom-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_a, key_a) =
            generate_self_signed(&["a.example".into()], DEV_CERT_VALIDITY).unwrap();
        let (cert_b, _) = generate_self_signed(&["b.example".into()], DEV_CERT_VALIDITY).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        // A chain of two, and a key file that starts with a certificate (the
        // key is the first private key section, whatever comes before it).
        let chain = write("chain.pem", &format!("{cert_a}\n{cert_b}"));
        let key = write("key.pem", &format!("{cert_b}\n{key_a}"));
        let identity = Identity::load(&chain, &key).unwrap();
        assert_eq!(identity.chain.len(), 2);
        assert!(matches!(identity.key, PrivateKeyDer::Pkcs8(_)));
        assert!(
            identity.server_config(&[b"h3"]).is_ok(),
            "key matches the leaf"
        );

        let no_key = write("no-key.pem", &cert_b);
        let e = format!("{:#}", Identity::load(&chain, &no_key).err().unwrap());
        assert!(e.contains("holds no private key"), "{e}");
        let no_cert = write("no-cert.pem", &key_a);
        let e = format!("{:#}", Identity::load(&no_cert, &key).err().unwrap());
        assert!(e.contains("holds no certificate"), "{e}");
        let broken = write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        );
        let e = format!("{:#}", Identity::load(&broken, &key).err().unwrap());
        assert!(e.contains("parsing certificate"), "{e}");
        let broken_key = write(
            "broken-key.pem",
            "-----BEGIN PRIVATE KEY-----\n!!not base64!!\n-----END PRIVATE KEY-----\n",
        );
        let e = format!("{:#}", Identity::load(&chain, &broken_key).err().unwrap());
        assert!(e.contains("parsing key"), "{e}");

        // A CA bundle of two certificates; a broken one is refused.
        assert!(client_config(&Trust::CaFile(chain), &[b"h3"]).is_ok());
        assert!(client_config(&Trust::CaFile(broken), &[b"h3"]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn fingerprint_parsing() {
        let h = [0xabu8; 32];
        assert_eq!(parse_hex32(&hex::encode(h)).unwrap(), h);
        assert!(parse_hex32("zz").is_err());
    }
}
