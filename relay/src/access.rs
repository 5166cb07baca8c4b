//! Who may read what at a relay (edge or origin): the token a MoQT session
//! opens with and the scope of each of its requests, the token of each HLS
//! request, and the revocations that end sessions early.
//!
//! The decisions are plain functions of tokens, namespaces and the clock,
//! made offline by a [`strom_token::Verifier`]. The only async part is the
//! revocation feed: [`RevocationWatch`] resolves when a revocation covering
//! a session's claims arrives, and the session's owner closes it.
//!
//! Scope rules:
//! - a `play` token opens a viewer session and covers its event (or its one
//!   stream); SUBSCRIBE, FETCH, TRACK_STATUS and SUBSCRIBE_NAMESPACE outside
//!   that scope are refused;
//! - a `relay` token (an edge's credential from the control plane) opens a
//!   session that may pull every broadcast: relays are the operator's
//!   infrastructure and carry every tenant. A relay credential that names an
//!   event is held to that event;
//! - `publish` tokens open no MoQT session (they are for the origin's ingest).
//!
//! A session admitted with a valid token lives until it closes or its token
//! is revoked; expiry is checked when a session opens and on every HLS
//! request, so players refresh their token between HLS requests.

use std::sync::Arc;
use std::time::Duration;

use crate::control_plane::{ControlPlaneLink, SyncHandle};
use moq_transport::message::RequestErrorCode;
use strom_token::revocation::RevocationFeed;
use strom_token::{Action, Claims, Revocation, TokenError, Verifier};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// AUTHORIZATION TOKEN type for strom tokens (0: a type agreed out of band;
/// the value is a PASETO `v4.public.…` string).
pub(crate) const TOKEN_TYPE: u64 = 0;
/// Query parameter carrying a token in HLS and WebTransport URLs.
pub(crate) const TOKEN_PARAM: &str = "token";
/// Cookie carrying an HLS viewer's token.
pub(crate) const TOKEN_COOKIE: &str = "strom_token";
/// A revocation that the feed missed (a lagging receiver) is still found
/// this often by looking at the revocations the verifier holds.
const RECHECK: Duration = Duration::from_secs(2);

/// Token actions that open a MoQT session at an origin: edges pulling.
pub const ORIGIN_SESSIONS: &[Action] = &[Action::Relay];
/// Token actions that open a MoQT session at an edge: viewers and lower-tier edges.
pub const EDGE_SESSIONS: &[Action] = &[Action::Play, Action::Relay];

/// Why access was refused. The text never contains the token.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("no token presented")]
    Missing,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("a {0:?} token does not open this session")]
    WrongAction(Action),
    #[error("only the operator's relays open sessions here")]
    NotOperatorRelay,
}

impl Refused {
    /// A short, fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::WrongAction(_) => "wrong_action",
            Refused::Token(e) => match e {
                TokenError::Malformed => "malformed",
                TokenError::UnknownKey => "unknown_key",
                TokenError::BadSignature => "bad_signature",
                TokenError::Expired => "expired",
                TokenError::NotYetValid => "not_yet_valid",
                TokenError::TooLong => "too_long",
                TokenError::Revoked => "revoked",
                TokenError::OutOfScope(_) => "out_of_scope",
                TokenError::Mint(_) => "mint",
            },
            Refused::NotOperatorRelay => "not_operator_relay",
        }
    }

    /// The REQUEST_ERROR code that tells a MoQT peer why (draft-18 §10.6).
    pub fn request_error_code(&self) -> RequestErrorCode {
        match self {
            Refused::Token(TokenError::Expired) => RequestErrorCode::ExpiredAuthToken,
            Refused::Token(TokenError::Malformed) => RequestErrorCode::MalformedAuthToken,
            _ => RequestErrorCode::Unauthorized,
        }
    }
}

/// Tokens and revocations of one relay. Build it with [`Access::new`] (tests,
/// embedders that feed keys themselves) or [`Access::connect`] (the control
/// plane keeps keys and revocations current).
pub struct Access {
    verifier: Arc<Verifier>,
    revoked: broadcast::Sender<Revocation>,
    session_actions: Vec<Action>,
    /// When set, relay sessions need an operator relay credential of one of
    /// these roles (an origin admits edges, not a tenant's agents).
    relay_roles: Option<Vec<strom_token::RelayRole>>,
    relay_credential: Option<String>,
    sync: Option<(SyncHandle, tokio::task::JoinHandle<()>)>,
    link: Option<ControlPlaneLink>,
}

impl Drop for Access {
    fn drop(&mut self) {
        if let Some((_, forward)) = &self.sync {
            forward.abort();
        }
    }
}

impl Access {
    /// Access checked against `verifier`'s keys and revocations; MoQT sessions
    /// open with a token whose action is one of `session_actions`.
    pub fn new(verifier: Arc<Verifier>, session_actions: &[Action]) -> Self {
        let (revoked, _) = broadcast::channel(1024);
        Self {
            verifier,
            revoked,
            session_actions: session_actions.to_vec(),
            relay_roles: None,
            relay_credential: None,
            sync: None,
            link: None,
        }
    }

    /// Relay sessions only with an operator relay credential of `roles`
    /// (an origin takes edges and origins; agents and their tickets pull
    /// from edges, never from an origin).
    pub fn only_relays(mut self, roles: &[strom_token::RelayRole]) -> Self {
        self.relay_roles = Some(roles.to_vec());
        self
    }

    /// The credential this relay presents to its own upstreams.
    pub fn with_relay_credential(mut self, credential: impl Into<String>) -> Self {
        self.relay_credential = Some(credential.into());
        self
    }

    /// Keys and revocations from the control plane at `link`, kept current in
    /// the background; `link.credential` is presented upstream.
    /// What the control plane said last is kept in `data_dir`
    /// ([`crate::control_plane::last_word`]): a relay starting while no
    /// replica answers checks tokens with it.
    pub async fn connect(
        link: ControlPlaneLink,
        session_actions: &[Action],
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let verifier = Arc::new(Verifier::new());
        let credential = link.credential.clone();
        let kept = data_dir.join(crate::control_plane::last_word::FILE);
        let handle =
            crate::control_plane::start_key_sync_kept(link.clone(), verifier.clone(), Some(kept))
                .await?;
        let mut access = Self::new(verifier, session_actions).with_relay_credential(credential);
        let mut feed = handle.subscribe();
        let sender = access.revoked.clone();
        let forward = tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(entry) => {
                        let _ = sender.send(entry);
                    }
                    // Sessions also look at the held list (RECHECK): nothing is lost.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        access.sync = Some((handle, forward));
        access.link = Some(link);
        Ok(access)
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The control plane this relay takes its keys from (and reports to).
    pub fn control_plane(&self) -> Option<&ControlPlaneLink> {
        self.link.as_ref()
    }

    /// The control plane's reachability and the play tokens accepted past
    /// their expiry during outages (`/metrics`), for a relay that follows
    /// a control plane.
    pub fn collect_metrics(&self, scrape: &crate::metrics::Scrape) {
        if self.link.is_none() {
            return;
        }
        let issuer = self.verifier.issuer();
        scrape.level(
            "strom_control_plane_reachable",
            "1 while the control plane answers this relay's key and revocation polls; 0 during an outage, when play tokens that expire are still accepted for strom_token::OUTAGE_GRACE_SECS.",
            if issuer.heard.is_some() && !issuer.unreachable { 1.0 } else { 0.0 },
        );
        scrape.count(
            "strom_play_tokens_extended_total",
            "Play token checks passed past the token's expiry because the control plane was unreachable.",
            self.verifier.extended_count(),
        );
    }

    pub fn relay_credential(&self) -> Option<&str> {
        self.relay_credential.as_deref()
    }

    /// Applies revocations (as the control plane's feed would) and tells every
    /// session watching; returns the entries that were new.
    pub fn revoke(&self, entries: Vec<Revocation>) -> Vec<Revocation> {
        let fresh = {
            let mut held = self.verifier.revocations_mut();
            let seq = entries
                .iter()
                .map(|e| e.seq)
                .max()
                .unwrap_or(0)
                .max(held.seq());
            held.apply(&RevocationFeed {
                seq,
                entries,
                reset: false,
                more: false,
            })
        };
        for entry in &fresh {
            let _ = self.revoked.send(entry.clone());
        }
        fresh
    }

    /// Checks the tokens a MoQT session opened with; the first that verifies
    /// and whose action opens sessions here wins.
    pub fn admit(&self, tokens: &[String], now: OffsetDateTime) -> Result<Claims, Refused> {
        let mut refused = Refused::Missing;
        for (i, token) in tokens.iter().enumerate() {
            let outcome = match self.verifier.verify(token, now) {
                Ok(claims) if !self.session_actions.contains(&claims.act) => {
                    Refused::WrongAction(claims.act)
                }
                Ok(claims) if claims.act == Action::Relay && !self.relay_role_admitted(&claims) => {
                    Refused::NotOperatorRelay
                }
                Ok(claims) => return Ok(claims),
                Err(e) => Refused::Token(e),
            };
            if i == 0 {
                refused = outcome;
            }
        }
        Err(refused)
    }

    fn relay_role_admitted(&self, claims: &Claims) -> bool {
        match &self.relay_roles {
            None => true,
            Some(roles) => claims.relay_role().is_some_and(|r| roles.contains(&r)),
        }
    }

    /// Whether a session admitted with `claims` may read the broadcast
    /// `namespace` (SUBSCRIBE, FETCH, TRACK_STATUS, announcements).
    pub fn permits(&self, claims: &Claims, namespace: &[&str]) -> Result<(), Refused> {
        if self.verifier.revocations().revokes(claims) {
            return Err(TokenError::Revoked.into());
        }
        let allowed = match claims.act {
            Action::Play => claims.covers(Action::Play, namespace),
            Action::Relay => {
                relay_tenant_allows(claims, namespace)
                    && (claims.evt.is_empty() || within(&claims.namespace_prefix(), namespace))
            }
            Action::Publish => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(TokenError::OutOfScope(namespace.join("/")).into())
        }
    }

    /// Whether a session may follow announcements under `prefix`
    /// (SUBSCRIBE_NAMESPACE): the prefix must lie on the path to the token's
    /// scope or inside it. What is then announced is filtered by [`permits`].
    ///
    /// [`permits`]: Access::permits
    pub fn permits_prefix(&self, claims: &Claims, prefix: &[&str]) -> Result<(), Refused> {
        if self.verifier.revocations().revokes(claims) {
            return Err(TokenError::Revoked.into());
        }
        let allowed = match claims.act {
            Action::Play => {
                !claims.evt.is_empty() && compatible(&claims.namespace_prefix(), prefix)
            }
            Action::Relay => {
                relay_tenant_allows(claims, prefix)
                    && (claims.evt.is_empty() || compatible(&claims.namespace_prefix(), prefix))
            }
            Action::Publish => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(TokenError::OutOfScope(prefix.join("/")).into())
        }
    }

    /// Checks an HLS request for `namespace`: the first candidate token (query
    /// parameter, then cookies) that allows playing it wins.
    pub fn authorize_hls<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a str>,
        namespace: &[&str],
        now: OffsetDateTime,
    ) -> Result<Claims, Refused> {
        let mut refused = Refused::Missing;
        for (i, token) in candidates.into_iter().enumerate() {
            match self.verifier.authorize(token, Action::Play, namespace, now) {
                Ok(claims) => return Ok(claims),
                Err(e) if i == 0 => refused = Refused::Token(e),
                Err(_) => {}
            }
        }
        Err(refused)
    }

    /// Every revocation applied from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revoked.subscribe()
    }

    /// A watch that resolves once `claims` are revoked. Subscribe before the
    /// session is admitted so that no revocation falls between the two.
    pub fn watch(self: &Arc<Self>, claims: Claims) -> RevocationWatch {
        RevocationWatch {
            feed: Some(self.revoked.subscribe()),
            access: self.clone(),
            claims,
        }
    }
}

/// `scope` is a prefix of `namespace`.
/// A platform relay credential reaches every tenant; another tenant's (a
/// peer-agent's) only namespaces under that tenant. An empty prefix lies on
/// the path to it (what is announced is then filtered per namespace).
fn relay_tenant_allows(claims: &Claims, path: &[&str]) -> bool {
    claims.ten == strom_token::PLATFORM_TENANT || path.first().is_none_or(|t| *t == claims.ten)
}

fn within(scope: &[&str], namespace: &[&str]) -> bool {
    namespace.len() >= scope.len() && scope.iter().zip(namespace).all(|(a, b)| a == b)
}

/// One of `a`, `b` is a prefix of the other.
fn compatible(a: &[&str], b: &[&str]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Resolves when the claims it watches are revoked.
pub struct RevocationWatch {
    feed: Option<broadcast::Receiver<Revocation>>,
    access: Arc<Access>,
    claims: Claims,
}

impl RevocationWatch {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Waits until a revocation covers the claims (at once if one already does).
    pub async fn revoked(&mut self) {
        let mut recheck = tokio::time::interval(RECHECK);
        loop {
            if self.access.verifier.revocations().revokes(&self.claims) {
                return;
            }
            let entry = match self.feed.as_mut() {
                Some(feed) => tokio::select! {
                    entry = feed.recv() => entry,
                    _ = recheck.tick() => continue,
                },
                None => {
                    recheck.tick().await;
                    continue;
                }
            };
            match entry {
                Ok(entry) if entry.revokes(&self.claims) => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => self.feed = None,
            }
        }
    }
}

/// The `Set-Cookie` value that lets a browser's HLS player present `token`
/// on every request under the token's scope (`/hls/<tenant>/<event>/`).
/// The token must have verified: its characters are cookie- and URL-safe.
pub fn hls_cookie(token: &str, claims: &Claims, secure: bool, now: OffsetDateTime) -> String {
    let path = claims.namespace_prefix().join("/");
    let max_age = (claims.exp - now).whole_seconds().max(0);
    // A player on another site's page needs SameSite=None, which browsers
    // accept only with Secure.
    let site = if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    format!("{TOKEN_COOKIE}={token}; Path=/hls/{path}/; Max-Age={max_age}; HttpOnly; {site}")
}

/// The values of every `name` cookie in `Cookie` header values.
pub(crate) fn cookie_values<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Vec<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .collect()
}

/// The decoded value of query parameter `name`.
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Adds `?token=…` to every URI of an HLS playlist (URI lines and `URI="…"`
/// attributes), so that players that do not keep cookies stay authorised.
pub fn tokenize_playlist(text: &str, token: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let with = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}{TOKEN_PARAM}={encoded}")
    };
    let mut out = String::with_capacity(text.len() + 64 * encoded.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if body.is_empty() {
            out.push_str(line);
            continue;
        }
        if !body.starts_with('#') {
            out.push_str(&with(body));
            out.push_str(end);
            continue;
        }
        let mut rest = body;
        while let Some(at) = rest.find("URI=\"") {
            let start = at + "URI=\"".len();
            let Some(len) = rest[start..].find('"') else {
                break;
            };
            out.push_str(&rest[..start]);
            out.push_str(&with(&rest[start..start + len]));
            rest = &rest[start + len..];
        }
        out.push_str(rest);
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests;
