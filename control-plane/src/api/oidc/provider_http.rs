//! How the control plane reaches a tenant's identity provider, without
//! becoming a way into its own network (SSRF). A tenant owner picks the
//! issuer, and the issuer's metadata picks the JWKS, token and UserInfo
//! URLs, so any of them could aim the control plane at loopback, the LAN
//! or a cloud metadata service. Every request openidconnect makes goes
//! through [`ProviderHttp`], which lets it out only over https to public
//! addresses:
//!
//! - address literals in a URL are checked before the request;
//! - names are resolved once by [`PolicyResolver`], every address is
//!   checked, and the connection goes to exactly those addresses (no second
//!   lookup, so no DNS-rebinding window);
//! - redirects are not followed, and no proxy is used (a proxy would
//!   resolve the name itself).
//!
//! [`AddressPolicy`] and [`classify`] are sans-IO: they judge URLs, names
//! and addresses and are unit-tested here.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openidconnect::reqwest;
use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};
use url::{Host, Url};

/// Names of cloud metadata services (they resolve to link-local addresses
/// there, refused anyway; refused by name too, whatever they resolve to).
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
];

/// Where an address leads, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Globally routable unicast.
    Public,
    /// This machine or an internal network: loopback, RFC 1918, CGNAT
    /// (100.64/10), unique-local (fc00::/7).
    Internal,
    /// Never a provider: link-local (cloud metadata at 169.254.169.254 and
    /// fd00:ec2::254), unspecified, multicast, broadcast, reserved,
    /// documentation and benchmarking ranges, IETF protocol assignments.
    Never,
}

/// Classifies `ip`; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as its
/// IPv4 address.
pub(crate) fn classify(ip: IpAddr) -> Reach {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// IPv4 ranges that never lead to a provider (IANA special-purpose
/// registry, less what [`Reach::Internal`] covers).
const V4_NEVER: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),          // "this network", 0.0.0.0
    ([169, 254, 0, 0], 16),     // link-local: cloud metadata 169.254.169.254
    ([100, 100, 100, 200], 32), // Alibaba Cloud's metadata, inside CGNAT
    ([192, 0, 0, 0], 24),       // IETF protocol assignments (OCI's 192.0.0.192)
    ([192, 0, 2, 0], 24),       // documentation
    ([192, 88, 99, 0], 24),     // 6to4 relay anycast
    ([198, 18, 0, 0], 15),      // benchmarking
    ([198, 51, 100, 0], 24),    // documentation
    ([203, 0, 113, 0], 24),     // documentation
    ([224, 0, 0, 0], 4),        // multicast
    ([240, 0, 0, 0], 4),        // reserved, and 255.255.255.255
];

/// IPv4 ranges of this machine and internal networks.
const V4_INTERNAL: &[([u8; 4], u8)] = &[
    ([127, 0, 0, 0], 8),    // loopback
    ([10, 0, 0, 0], 8),     // RFC 1918
    ([172, 16, 0, 0], 12),  // RFC 1918
    ([192, 168, 0, 0], 16), // RFC 1918
    ([100, 64, 0, 0], 10),  // CGNAT (RFC 6598)
];

fn in_v4(ip: Ipv4Addr, (net, prefix): ([u8; 4], u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    if V4_NEVER.iter().any(|&n| in_v4(ip, n)) {
        Reach::Never
    } else if V4_INTERNAL.iter().any(|&n| in_v4(ip, n)) {
        Reach::Internal
    } else {
        Reach::Public
    }
}

/// IPv6 ranges inside global unicast (2000::/3) that never lead to a provider.
const V6_NEVER: &[(Ipv6Addr, u8)] = &[
    // IETF protocol assignments: Teredo, benchmarking, ORCHID.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation
];

fn in_v6(ip: Ipv6Addr, (net, prefix): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    let unique_local = (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7);
    let global_unicast = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
    let six_to_four = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);
    if ip.is_loopback() {
        Reach::Internal
    } else if in_v6(ip, unique_local) {
        // AWS serves its metadata at fd00:ec2::254.
        if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            Reach::Never
        } else {
            Reach::Internal
        }
    } else if !in_v6(ip, global_unicast) || V6_NEVER.iter().any(|&n| in_v6(ip, n)) {
        // Outside 2000::/3: ::, IPv4-compatible, NAT64 (64:ff9b::/96),
        // discard (100::/64), link-local (fe80::/10), multicast (ff00::/8).
        Reach::Never
    } else if in_v6(ip, six_to_four) {
        // 6to4 carries an IPv4 address, which must be public itself.
        let s = ip.segments();
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        match classify_v4(Ipv4Addr::new(a, b, c, d)) {
            Reach::Public => Reach::Public,
            _ => Reach::Never,
        }
    } else {
        Reach::Public
    }
}

/// Why a URL, name or address was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("must be https")]
    NotHttps,
    #[error("must name a host")]
    NoHost,
    #[error("names a cloud metadata service")]
    MetadataName,
    #[error("names this machine (localhost)")]
    Localhost,
    #[error("is not a public address ({0})")]
    NotPublic(IpAddr),
    #[error("resolves to an address that is not public")]
    ResolvesNotPublic,
    #[error("does not resolve")]
    Unresolved,
}

/// What the control plane may reach for single sign-on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddressPolicy {
    /// Also [`Reach::Internal`] addresses, `localhost`, and plain http on
    /// loopback (`control_plane.oidc_allow_private_addresses`: development,
    /// the tests' local provider, a provider on the company network).
    /// [`Reach::Never`] and metadata names stay refused.
    pub allow_private: bool,
}

fn is_localhost(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

impl AddressPolicy {
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            Reach::Public => true,
            Reach::Internal => self.allow_private,
            Reach::Never => false,
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refusal::NotPublic(ip))
        }
    }

    /// A host name, before it is resolved.
    pub(crate) fn check_name(&self, host: &str) -> Result<(), Refusal> {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(Refusal::MetadataName);
        }
        if is_localhost(&name) && !self.allow_private {
            return Err(Refusal::Localhost);
        }
        Ok(())
    }

    /// A URL the control plane is about to fetch: https (http only to
    /// loopback, and only with `allow_private`), and a host that passes
    /// [`Self::check_name`] or an address that [`Self::permits`].
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host().ok_or(Refusal::NoHost)?;
        let loopback = match &host {
            Host::Ipv4(ip) => ip.is_loopback(),
            Host::Ipv6(ip) => ip.is_loopback(),
            Host::Domain(d) => is_localhost(&d.trim_end_matches('.').to_ascii_lowercase()),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback && self.allow_private => {}
            _ => return Err(Refusal::NotHttps),
        }
        match host {
            Host::Ipv4(ip) => self.check_ip(ip.into()),
            Host::Ipv6(ip) => self.check_ip(ip.into()),
            Host::Domain(d) => self.check_name(d),
        }
    }

    /// What a name resolved to: every address must be permitted.
    pub(crate) fn check_resolved(&self, addrs: &[SocketAddr]) -> Result<(), Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::Unresolved);
        }
        if addrs.iter().all(|a| self.permits(a.ip())) {
            Ok(())
        } else {
            Err(Refusal::ResolvesNotPublic)
        }
    }
}

/// Resolves names for [`ProviderHttp`] and hands reqwest only addresses
/// the policy permits, so the connection goes where the check looked.
pub(crate) struct PolicyResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            policy.check_name(&host)?;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| Refusal::Unresolved)?
                .collect();
            policy.check_resolved(&addrs)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A request to the provider that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderHttpError {
    /// Not sent: the URL (or what its name resolved to) is not allowed.
    #[error("refused: the URL {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Http(HttpClientError<reqwest::Error>),
}

/// The HTTP client for every call to identity providers.
pub(crate) struct ProviderHttp {
    client: reqwest::Client,
    policy: AddressPolicy,
}

impl ProviderHttp {
    pub(crate) fn new(policy: AddressPolicy) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Redirects would lead anywhere (openidconnect's docs warn of SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver { policy }))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self { client, policy })
    }
}

/// The policy's refusal somewhere in `error`'s chain (the resolver's error
/// comes back wrapped by reqwest and hyper).
fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        next = e.source();
    }
    None
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = ProviderHttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        let checked = Url::parse(&request.uri().to_string())
            .map_err(|_| Refusal::NoHost)
            .and_then(|url| self.policy.check_url(&url));
        Box::pin(async move {
            checked.map_err(ProviderHttpError::Refused)?;
            self.client
                .call(request)
                .await
                .map_err(|e| match refusal_in(&e) {
                    Some(r) => ProviderHttpError::Refused(r),
                    None => ProviderHttpError::Http(e),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    const STRICT: AddressPolicy = AddressPolicy {
        allow_private: false,
    };
    const LENIENT: AddressPolicy = AddressPolicy {
        allow_private: true,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_classified() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(classify(ip(public)), Reach::Public, "{public}");
        }
        for internal in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert_eq!(classify(ip(internal)), Reach::Internal, "{internal}");
        }
        for never in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.192",
            "192.88.99.1",
            "::",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "2002:7f00:0001::1",
            "2002:a9fe:a9fe::1",
        ] {
            assert_eq!(classify(ip(never)), Reach::Never, "{never}");
        }
    }

    #[test]
    fn urls_must_be_https_to_public_hosts() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(STRICT.check_url(&url("https://login.example.com/")), Ok(()));
        assert_eq!(STRICT.check_url(&url("https://8.8.8.8/x")), Ok(()));
        for (u, refusal) in [
            ("http://login.example.com/", Refusal::NotHttps),
            ("http://127.0.0.1:8080/", Refusal::NotHttps),
            ("ftp://login.example.com/", Refusal::NotHttps),
            (
                "https://127.0.0.1:8080/",
                Refusal::NotPublic(ip("127.0.0.1")),
            ),
            // The URL parser normalises other spellings of 127.0.0.1.
            ("https://127.1/", Refusal::NotPublic(ip("127.0.0.1"))),
            ("https://0x7f000001/", Refusal::NotPublic(ip("127.0.0.1"))),
            ("https://[::1]/", Refusal::NotPublic(ip("::1"))),
            (
                "https://[::ffff:127.0.0.1]/",
                Refusal::NotPublic(ip("::ffff:127.0.0.1")),
            ),
            (
                "https://169.254.169.254/latest/meta-data/",
                Refusal::NotPublic(ip("169.254.169.254")),
            ),
            ("https://10.0.0.5/", Refusal::NotPublic(ip("10.0.0.5"))),
            ("https://localhost/", Refusal::Localhost),
            ("https://LocalHost./", Refusal::Localhost),
            ("https://idp.localhost/", Refusal::Localhost),
            ("https://metadata.google.internal/", Refusal::MetadataName),
            ("https://Metadata.Google.Internal./", Refusal::MetadataName),
        ] {
            assert_eq!(STRICT.check_url(&url(u)), Err(refusal), "{u}");
        }
        // Development and on-premises providers: internal addresses, http on
        // loopback only; metadata services never.
        for ok in [
            "http://127.0.0.1:8080/",
            "http://localhost:8080/",
            "http://[::1]:8080/",
            "https://10.0.0.5/",
            "https://localhost/",
            "https://idp.corp.internal/",
        ] {
            assert_eq!(LENIENT.check_url(&url(ok)), Ok(()), "{ok}");
        }
        for (u, refusal) in [
            ("http://10.0.0.5/", Refusal::NotHttps),
            ("http://idp.example.com/", Refusal::NotHttps),
            (
                "https://169.254.169.254/",
                Refusal::NotPublic(ip("169.254.169.254")),
            ),
            ("https://metadata.google.internal/", Refusal::MetadataName),
        ] {
            assert_eq!(LENIENT.check_url(&url(u)), Err(refusal), "{u}");
        }
    }

    #[test]
    fn every_resolved_address_must_pass() {
        let sa = |s: &str| SocketAddr::new(ip(s), 0);
        assert_eq!(STRICT.check_resolved(&[sa("1.1.1.1")]), Ok(()));
        assert_eq!(
            STRICT.check_resolved(&[sa("1.1.1.1"), sa("10.0.0.1")]),
            Err(Refusal::ResolvesNotPublic)
        );
        assert_eq!(STRICT.check_resolved(&[]), Err(Refusal::Unresolved));
        assert_eq!(
            LENIENT.check_resolved(&[sa("1.1.1.1"), sa("10.0.0.1")]),
            Ok(())
        );
        assert_eq!(
            LENIENT.check_resolved(&[sa("169.254.169.254")]),
            Err(Refusal::ResolvesNotPublic)
        );
    }

    /// The resolver the client connects through refuses what a name
    /// resolves to, not only what the name says.
    #[tokio::test]
    async fn the_resolver_checks_resolved_addresses() {
        let resolver = PolicyResolver { policy: STRICT };
        // An address literal as a name resolves to itself.
        for name in ["127.0.0.1", "10.1.2.3", "169.254.169.254"] {
            let err = match resolver.resolve(name.parse().unwrap()).await {
                Ok(_) => panic!("{name} resolved"),
                Err(e) => e,
            };
            assert_eq!(
                refusal_in(&*err),
                Some(Refusal::ResolvesNotPublic),
                "{name}"
            );
        }
        let lenient = PolicyResolver { policy: LENIENT };
        let addrs: Vec<_> = lenient
            .resolve("127.0.0.1".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec![SocketAddr::new(ip("127.0.0.1"), 0)]);
    }

    /// Whatever the URL (an issuer, or a `jwks_uri`, token or UserInfo
    /// endpoint from its metadata), a refused one is never connected to.
    #[tokio::test]
    async fn refused_urls_are_never_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = ProviderHttp::new(STRICT).unwrap();
        for url in [
            format!("https://127.0.0.1:{port}/jwks"),
            format!("https://[::ffff:127.0.0.1]:{port}/jwks"),
            format!("https://localhost:{port}/.well-known/openid-configuration"),
            format!("http://127.0.0.1:{port}/token"),
        ] {
            let request = openidconnect::http::Request::builder()
                .uri(url.as_str())
                .body(Vec::new())
                .unwrap();
            match http.call(request).await {
                Err(ProviderHttpError::Refused(_)) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        // Nothing knocked.
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a refused URL was connected to");
    }
}
