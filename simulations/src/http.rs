//! A minimal HTTP/1.1 GET client over one keep-alive TCP connection, enough
//! for an edge's plain-HTTP LL-HLS and `/metrics` on loopback. One request
//! at a time per client, as an HLS player's playlist or media connection.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest body accepted (a segment of a high-bitrate rendition is far less).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Longest status or header line accepted.
const MAX_LINE: usize = 16 * 1024;

/// An HTTP response: status and whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Where to connect and what to say in `Host:`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: String,
    pub host: String,
    /// Path prefix of the base URL without a trailing slash ("" for the root).
    pub base_path: String,
}

impl Target {
    /// From `http://host:port[/prefix]` (HTTPS is not supported).
    pub fn parse(url: &url::Url) -> anyhow::Result<Target> {
        if url.scheme() != "http" {
            bail!("only http:// edges are supported, not {}", url.scheme());
        }
        let host = url.host_str().context("HTTP URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        Ok(Target {
            addr: addr.clone(),
            host: format!("{host}:{port}"),
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// One connection, re-opened when the server closes it.
pub struct Client {
    target: Target,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client { target, conn: None }
    }

    /// GETs `path` (relative to the base URL, starting with '/') within `limit`.
    pub async fn get(&mut self, path: &str, limit: Duration) -> anyhow::Result<Response> {
        match tokio::time::timeout(limit, self.get_inner(path)).await {
            Ok(res) => res,
            Err(_) => {
                self.conn = None;
                bail!("GET {path} timed out after {limit:?}")
            }
        }
    }

    async fn get_inner(&mut self, path: &str) -> anyhow::Result<Response> {
        // A kept-alive connection may have been closed by the server since
        // the last request: retry once on a fresh one.
        let reused = self.conn.is_some();
        match self.request(path).await {
            Ok(r) => Ok(r),
            Err(err) if reused => {
                tracing::debug!(error = %format!("{err:#}"), "retrying on a new connection");
                self.conn = None;
                self.request(path).await
            }
            Err(err) => Err(err),
        }
    }

    async fn request(&mut self, path: &str) -> anyhow::Result<Response> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.target.addr)
                .await
                .with_context(|| format!("connecting to {}", self.target.addr))?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(BufReader::new(stream));
        }
        let Some(conn) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let head = format!(
            "GET {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: strom-load\r\nAccept: */*\r\n\r\n",
            self.target.base_path, path, self.target.host
        );
        let result = exchange(conn, head.as_bytes()).await;
        match result {
            Ok((response, keep_alive)) => {
                if !keep_alive {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(err) => {
                self.conn = None;
                Err(err)
            }
        }
    }
}

async fn read_line(conn: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<()> {
    line.clear();
    let n = (&mut *conn)
        .take(MAX_LINE as u64)
        .read_line(line)
        .await
        .context("reading the response head")?;
    if n == 0 {
        bail!("connection closed before the response");
    }
    if !line.ends_with('\n') {
        bail!("response line too long");
    }
    Ok(())
}

async fn exchange(
    conn: &mut BufReader<TcpStream>,
    head: &[u8],
) -> anyhow::Result<(Response, bool)> {
    conn.get_mut()
        .write_all(head)
        .await
        .context("sending the request")?;
    let mut line = String::new();
    read_line(conn, &mut line).await?;
    let mut words = line.split_whitespace();
    let version = words.next().unwrap_or("");
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {:?}", line.trim_end()))?;
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {:?}", line.trim_end());
    }
    let mut keep_alive = version == "HTTP/1.1";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for _ in 0..200 {
        read_line(conn, &mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            let body = if status == 204 || status == 304 {
                Vec::new()
            } else if chunked {
                read_chunked(conn).await?
            } else {
                let len = length.context("response has neither Content-Length nor chunking")?;
                if len > MAX_BODY {
                    bail!("response body of {len} bytes is too large");
                }
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body)
                    .await
                    .context("reading the body")?;
                body
            };
            return Ok((
                Response {
                    status,
                    body: Bytes::from(body),
                },
                keep_alive,
            ));
        }
        let Some((name, value)) = l.split_once(':') else {
            bail!("bad header line {l:?}");
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().context("bad Content-Length")?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => {
                if value.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
    }
    bail!("too many response headers")
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        read_line(conn, &mut line).await?;
        let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                read_line(conn, &mut line).await?;
                if line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            bail!("chunked body too large");
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])
            .await
            .context("reading a chunk")?;
        read_line(conn, &mut line).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn keep_alive_and_chunked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut served = 0;
            while served < 2 {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                let reply: &[u8] = if served == 0 {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                } else {
                    b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                };
                s.write_all(reply).await.expect("write");
                served += 1;
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/base/")).expect("url");
        let target = Target::parse(&url).expect("target");
        assert_eq!(target.base_path, "/base");
        let mut client = Client::new(target);
        let a = client.get("/x", Duration::from_secs(5)).await.expect("a");
        assert_eq!((a.status, &a.body[..]), (200, &b"hello"[..]));
        let b = client.get("/y", Duration::from_secs(5)).await.expect("b");
        assert_eq!((b.status, &b.body[..]), (404, &b"abcde"[..]));
    }
}
