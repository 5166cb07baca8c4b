//! Recordings as HLS VOD (MEDIA-6). The origin keeps them on disk and
//! answers `/vod/...` requests itself; an edge forwards them to its upstream
//! over HTTPS (the upstream's pinned certificate, this relay's credential)
//! and keeps the immutable files (segments, init segments) in a bounded
//! in-memory cache, so many viewers of one recording cost the origin one
//! read per file.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::tls::{self, Trust};

/// One answer to a `/vod/<rest>` request.
#[derive(Debug, Clone)]
pub struct VodAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// `Cache-Control` value.
    pub cache: &'static str,
}

impl VodAnswer {
    pub fn error(status: u16, message: &str) -> Self {
        VodAnswer {
            status,
            content_type: "text/plain".into(),
            body: Bytes::from(format!("{message}\n")),
            cache: "no-store",
        }
    }
}

pub type VodFuture<'a> = Pin<Box<dyn Future<Output = VodAnswer> + Send + 'a>>;

/// Where `/vod/` answers come from.
pub trait VodSource: Send + Sync + 'static {
    /// `rest` is the path after `/vod/`, already checked against the
    /// viewer's token for its first three segments.
    fn get<'a>(&'a self, rest: &'a str) -> VodFuture<'a>;
}

/// True for files that never change once they exist.
pub fn immutable(rest: &str) -> bool {
    rest.ends_with(".m4s") || rest.ends_with(".mp4")
}

/// An edge's VOD: its upstream's, through a cache.
pub struct UpstreamVod {
    base: url::Url,
    client: reqwest::Client,
    credential: Option<String>,
    cache: Mutex<ByteCache>,
}

struct ByteCache {
    max_bytes: usize,
    bytes: usize,
    map: HashMap<String, VodAnswer>,
    order: VecDeque<String>,
}

impl ByteCache {
    fn get(&self, key: &str) -> Option<VodAnswer> {
        self.map.get(key).cloned()
    }

    fn put(&mut self, key: String, answer: VodAnswer) {
        if answer.body.len() > self.max_bytes / 4 || self.map.contains_key(&key) {
            return;
        }
        self.bytes += answer.body.len();
        self.order.push_back(key.clone());
        self.map.insert(key, answer);
        while self.bytes > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(a) = self.map.remove(&old) {
                self.bytes -= a.body.len();
            }
        }
    }
}

impl UpstreamVod {
    /// `base` is the upstream's `https://host:port`; `trust` as for its MoQT.
    pub fn new(
        base: url::Url,
        trust: &Trust,
        credential: Option<String>,
        cache_bytes: usize,
    ) -> anyhow::Result<Self> {
        let tls = tls::client_config(trust, &[b"http/1.1"])?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(20))
            // The origin answers itself; a redirect (and the credential
            // with it) is followed nowhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(UpstreamVod {
            base,
            client,
            credential,
            cache: Mutex::new(ByteCache {
                max_bytes: cache_bytes,
                bytes: 0,
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        })
    }

    async fn fetch(&self, rest: &str) -> VodAnswer {
        let Ok(url) = self.base.join(&format!("vod/{rest}")) else {
            return VodAnswer::error(400, "bad path");
        };
        let mut request = self.client.get(url);
        if let Some(c) = &self.credential {
            request = request.bearer_auth(c);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "VOD upstream unreachable");
                return VodAnswer::error(502, "recording source unreachable");
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        match response.bytes().await {
            Ok(body) => VodAnswer {
                status,
                content_type,
                body,
                cache: if immutable(rest) && status == 200 {
                    "max-age=86400"
                } else {
                    "no-cache"
                },
            },
            Err(_) => VodAnswer::error(502, "recording source broke off"),
        }
    }
}

impl VodSource for UpstreamVod {
    fn get<'a>(&'a self, rest: &'a str) -> VodFuture<'a> {
        Box::pin(async move {
            let lock = || self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = lock().get(rest) {
                return hit;
            }
            let answer = self.fetch(rest).await;
            if answer.status == 200 && immutable(rest) {
                lock().put(rest.to_owned(), answer.clone());
            }
            answer
        })
    }
}

/// Checks the path of a VOD request: only plain segment names (letters,
/// digits, `-`, `_`, `.`, never `..`), at most 6 segments.
pub fn safe_path(rest: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() > 6
        || parts.iter().any(|p| {
            p.starts_with('.')
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    {
        return None;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_traversal_are_refused() {
        assert!(safe_path("acme/e1/main/1700000000000/video/3.m4s").is_some());
        assert!(safe_path("acme/e1/main/index.json").is_some());
        assert!(safe_path("acme/../../etc/passwd").is_none());
        assert!(safe_path("acme/e1/main/.hidden").is_none());
        assert!(safe_path("acme/e1/main/a b").is_none());
        assert!(safe_path("a/b/c/d/e/f/g").is_none());
    }

    #[test]
    fn the_cache_keeps_within_its_budget() {
        let mut c = ByteCache {
            max_bytes: 100,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        };
        for i in 0..10 {
            c.put(
                format!("{i}.m4s"),
                VodAnswer {
                    status: 200,
                    content_type: "video/mp4".into(),
                    body: Bytes::from(vec![0u8; 20]),
                    cache: "max-age=86400",
                },
            );
        }
        assert!(c.bytes <= 100);
        assert!(c.get("9.m4s").is_some());
        assert!(c.get("0.m4s").is_none());
    }
}
