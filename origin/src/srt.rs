//! SRT ingest: a listener encoders call in to, through libsrt.
//!
//! The caller names what it publishes in the standard stream id,
//! `#!::r=<app>/<key>,m=publish` (a bare `#!::r=<key>` means app `live`,
//! and a stream id without `#!::` is taken as the resource itself, as many
//! encoders send). The credential is checked by the same
//! [`PublishAuthorizer`] RTMP uses, inside libsrt's listener callback, before
//! the handshake is answered; the stream's passphrase is set on the new socket
//! there, so each stream has its own. The key length is the caller's (AES-128,
//! 192 or 256): libsrt's responder adopts it. Encryption is enforced both ways:
//! an unencrypted caller of a stream with a passphrase, an encrypting caller of
//! one without, or a wrong passphrase is refused during the handshake. A
//! refusal carries an SRT rejection code (1401 unauthorised, 1405 bad mode,
//! 1409 already live, ...) that the encoder shows, is logged, and costs no one
//! else anything: libsrt handles every handshake, malformed ones included, and
//! the listener goes on accepting.
//!
//! Each connection runs on its own thread (libsrt's receive call blocks): it
//! demuxes MPEG-TS into tags ([`strom_media::TsIngest`]) and hands them to the
//! same [`PublishSession`] as RTMP. Link statistics (RTT, loss, retransmits,
//! drops, receive buffer) are sampled every 2 s into `/metrics`. A panic on
//! that thread ends its push alone: the socket is closed, its statistics are
//! removed, `strom_ingest_panics_total` counts it and the log says where.
//!
//! Between the callback's admission and libsrt's end of the handshake (where
//! the passphrase is checked) a caller is unauthenticated: it holds a place
//! in the origin's [`Admission`] (at most so many at once, per origin and
//! per address, refused with 1402 beyond), and an admission that never
//! became a connection (libsrt refused the caller after the callback) is
//! forgotten after the admission deadline.

mod ffi;
mod stats;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use strom_media::{TsIngest, TsTag};

use crate::admission::{Admission, Unauthenticated};
use crate::auth::{key_label, PublishAuthorizer, Publisher, Transport, TOKEN_APP};
use crate::contain::contained;
use crate::publish::{rendition_name, Publications, PushOptions};

pub(crate) use stats::SrtCounters;
use stats::{link_key, sample};

/// A publisher that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often link statistics are sampled.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// libsrt's receive payload per message (7 TS packets; live mode's maximum is 1456).
const MESSAGE: usize = 1500;

/// What an SRT caller asked for in its stream id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdRequest {
    pub app: String,
    pub key: String,
    /// `m=`: `publish` is the only mode offered; absent means publish.
    pub mode: Option<String>,
    /// Backup encoder and rendition: `backup=1`, `rendition=360p` in the
    /// list, or as a query after the key (`?backup=1&rendition=360p`).
    pub options: PushOptions,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamIdError {
    #[error("the stream id is empty")]
    Empty,
    #[error("the stream id names no resource (r=)")]
    NoResource,
    #[error("the stream id has a malformed entry {0:?}")]
    Malformed(String),
    #[error("{0}")]
    BadOption(String),
}

/// Parses an SRT stream id (SRT Access Control, "#!::" key=value list).
pub fn parse_stream_id(id: &str) -> Result<StreamIdRequest, StreamIdError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(StreamIdError::Empty);
    }
    let (resource, mode, listed) = match id.strip_prefix("#!::") {
        Some(list) => {
            let mut resource = None;
            let mut mode = None;
            let mut listed = PushOptions::default();
            for entry in list.split(',').filter(|e| !e.is_empty()) {
                let (k, v) = entry
                    .split_once('=')
                    .ok_or_else(|| StreamIdError::Malformed(entry.chars().take(20).collect()))?;
                match k {
                    "r" => resource = Some(v.to_owned()),
                    "m" => mode = Some(v.to_owned()),
                    "backup" => listed.backup |= matches!(v, "1" | "true"),
                    "rendition" => {
                        listed.rendition =
                            Some(rendition_name(v).map_err(StreamIdError::BadOption)?)
                    }
                    // u (user), s (session), t (type), h (host) and others are not used.
                    _ => {}
                }
            }
            (resource.ok_or(StreamIdError::NoResource)?, mode, listed)
        }
        None => (id.to_owned(), None, PushOptions::default()),
    };
    let (resource, query) = PushOptions::split(&resource).map_err(StreamIdError::BadOption)?;
    let options = listed.merge(query);
    let resource = resource.trim_matches('/');
    if resource.is_empty() {
        return Err(StreamIdError::NoResource);
    }
    let (app, key) = match resource.split_once('/') {
        Some((app, key)) => (app.to_owned(), key.to_owned()),
        None => (TOKEN_APP.to_owned(), resource.to_owned()),
    };
    Ok(StreamIdRequest {
        app,
        key,
        mode,
        options,
    })
}

/// What the listener callback admitted, waiting for `srt_accept`.
struct Admitted {
    publisher: Publisher,
    options: PushOptions,
    label: String,
    remote: Option<SocketAddr>,
    at: Instant,
    /// Its place among the unauthenticated connections, until libsrt has
    /// finished the handshake (then the caller is authenticated).
    place: Option<Unauthenticated>,
}

/// A handshake the callback refuses: SRT rejection code, metric label, log text.
#[derive(Debug)]
struct Refusal {
    code: c_int,
    reason: &'static str,
    message: String,
}

fn refuse(code: c_int, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason,
        message: message.into(),
    }
}

/// What the listener callback and the connection threads share.
pub(crate) struct SrtContext {
    pub authorizer: Arc<dyn PublishAuthorizer>,
    pub publications: Arc<Publications>,
    pub counters: Arc<SrtCounters>,
    /// For the revocation watches (async) of running pushes.
    pub runtime: tokio::runtime::Handle,
    /// Shared with the RTMP listeners: the origin's unauthenticated connections.
    pub admission: Arc<Admission>,
    pending: Mutex<HashMap<ffi::SRTSOCKET, Admitted>>,
    /// Sockets of running pushes: whoever takes one out closes it (its
    /// thread when the push ends, [`SrtContext::stop`] when the origin does).
    live: Mutex<std::collections::HashSet<ffi::SRTSOCKET>>,
    /// The origin is stopping: accept nothing more.
    stopping: std::sync::atomic::AtomicBool,
}

impl SrtContext {
    pub(crate) fn new(
        authorizer: Arc<dyn PublishAuthorizer>,
        publications: Arc<Publications>,
        counters: Arc<SrtCounters>,
        runtime: tokio::runtime::Handle,
        admission: Arc<Admission>,
    ) -> Arc<Self> {
        Arc::new(Self {
            authorizer,
            publications,
            counters,
            runtime,
            admission,
            pending: Mutex::new(HashMap::new()),
            live: Mutex::new(Default::default()),
            stopping: Default::default(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<ffi::SRTSOCKET>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes `sock` unless someone else already took it out and closed it.
    fn close_live(&self, sock: ffi::SRTSOCKET) {
        if self.live().remove(&sock) {
            // SAFETY: a connection socket, closed once (taken out above).
            unsafe { ffi::srt_close(sock) };
        }
    }

    /// The origin is stopping: every running push's socket is closed (its
    /// thread sees the error and ends its publish).
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let socks: Vec<_> = self.live().drain().collect();
        for sock in socks {
            // SAFETY: taken out of `live`, so closed exactly once.
            unsafe { ffi::srt_close(sock) };
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<ffi::SRTSOCKET, Admitted>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets admissions older than the deadline: libsrt refused those
    /// callers after the callback (wrong or missing passphrase), so no
    /// connection will come for them.
    fn forget_stale(&self, now: Instant) {
        let deadline = self.admission.deadline();
        self.pending()
            .retain(|_, a| now.saturating_duration_since(a.at) < deadline);
    }

    /// The listener callback's decision on a caller from `remote`: a place
    /// among the unauthenticated connections (refused with 1402 when there
    /// is none), then [`screen`](Self::screen).
    fn decide(
        &self,
        hs_version: c_int,
        stream_id: &str,
        remote: Option<SocketAddr>,
        now: Instant,
    ) -> Result<(Admitted, Option<String>), Refusal> {
        self.forget_stale(now);
        let peer = remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |r| r.ip());
        let place = self
            .admission
            .enter(Transport::Srt, peer)
            .map_err(|crowded| {
                self.admission.log_crowded(Transport::Srt, crowded);
                refuse(ffi::SRT_REJX_OVERLOAD, crowded.label(), crowded.to_string())
            })?;
        let (mut admitted, passphrase) = self.screen(hs_version, stream_id)?;
        admitted.remote = remote;
        admitted.at = now;
        admitted.place = Some(place);
        Ok((admitted, passphrase))
    }

    /// Keeps an admitted caller's push until libsrt hands over its socket.
    fn hold(&self, ns: ffi::SRTSOCKET, admitted: Admitted) {
        self.pending().insert(ns, admitted);
    }

    /// Decides on one handshake: the push it admits and the stream's
    /// passphrase, if its pushes are encrypted.
    fn screen(
        &self,
        hs_version: c_int,
        stream_id: &str,
    ) -> Result<(Admitted, Option<String>), Refusal> {
        if hs_version < 5 {
            return Err(refuse(
                ffi::SRT_REJX_BAD_REQUEST,
                "old_handshake",
                "an SRT handshake before version 5 carries no stream id",
            ));
        }
        let req = parse_stream_id(stream_id)
            .map_err(|e| refuse(ffi::SRT_REJX_BAD_REQUEST, "bad_stream_id", e.to_string()))?;
        if let Some(mode) = req.mode.as_deref().filter(|m| *m != "publish") {
            let mode: String = mode.chars().take(16).collect();
            return Err(refuse(
                ffi::SRT_REJX_BAD_MODE,
                "bad_mode",
                format!("mode {mode:?} is not offered; callers publish (m=publish)"),
            ));
        }
        let label = key_label(&req.key);
        let publisher = self
            .authorizer
            .admit(&req.app, &req.key, Transport::Srt)
            .map_err(|refused| {
                refuse(
                    ffi::SRT_REJX_UNAUTHORIZED,
                    refused.label(),
                    format!(
                        "publish refused for app {:?}, key {label}: {refused}",
                        req.app
                    ),
                )
            })?;
        if self
            .publications
            .is_connected(&publisher.namespace, &req.options)
        {
            return Err(refuse(
                ffi::SRT_REJX_CONFLICT,
                "already_live",
                format!(
                    "{} is already being published by a {} encoder",
                    publisher.namespace,
                    req.options.role().as_str()
                ),
            ));
        }
        let passphrase = self
            .authorizer
            .srt_passphrase(&publisher.namespace, &req.key)
            .map_err(|e| refuse(ffi::SRT_REJX_DOWN, "not_ready", e.to_string()))?;
        let admitted = Admitted {
            publisher,
            options: req.options.clone(),
            label,
            remote: None,
            at: Instant::now(),
            place: None,
        };
        Ok((admitted, passphrase))
    }
}

/// libsrt's listener callback: runs on libsrt's receiving thread for each
/// caller's conclusion handshake, before it is answered.
unsafe extern "C" fn on_handshake(
    opaque: *mut c_void,
    ns: ffi::SRTSOCKET,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    // A panic must not unwind into C.
    let decided = contained(|| {
        // SAFETY: `opaque` is the `Arc<SrtContext>` the listener holds for as
        // long as the callback is installed; libsrt passes a valid peer address
        // and a NUL-terminated stream id (or null).
        let ctx = unsafe { &*(opaque as *const SrtContext) };
        let remote = unsafe { ffi::from_raw(peer) };
        let id = if stream_id.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(stream_id) }
                .to_string_lossy()
                .into_owned()
        };
        match ctx.decide(hs_version, &id, remote, Instant::now()) {
            Ok((admitted, passphrase)) => {
                if let Some(p) = passphrase {
                    // SAFETY: `ns` is the socket libsrt is creating for this caller.
                    let rc = unsafe {
                        ffi::srt_setsockflag(
                            ns,
                            ffi::SRTO_PASSPHRASE,
                            p.as_ptr().cast(),
                            p.len() as c_int,
                        )
                    };
                    if rc == ffi::SRT_ERROR {
                        let (_, text) = ffi::last_error();
                        tracing::error!(namespace = %admitted.publisher.namespace, error = %text, "SRT passphrase could not be set");
                        ctx.counters.refused("internal");
                        unsafe { ffi::srt_setrejectreason(ns, ffi::SRT_REJX_ISE) };
                        return -1;
                    }
                }
                ctx.hold(ns, admitted);
                0
            }
            Err(refusal) => {
                ctx.counters.refused(refusal.reason);
                // Crowding is logged by the admission, at most every 10 s.
                if refusal.code != ffi::SRT_REJX_OVERLOAD {
                    tracing::warn!(remote = %shown(remote), reason = refusal.reason, error = %refusal.message, "SRT handshake refused");
                }
                // SAFETY: as above.
                unsafe { ffi::srt_setrejectreason(ns, refusal.code) };
                -1
            }
        }
    });
    decided.unwrap_or_else(|err| {
        tracing::error!(error = %err, "SRT handshake refused: the check failed");
        -1
    })
}

/// libsrt's own log lines (why a handshake failed: "Incorrect passphrase",
/// "Password required or unexpected", ...) as strom log lines. They name
/// no peer.
unsafe extern "C" fn library_log(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    _area: *const c_char,
    message: *const c_char,
) {
    if message.is_null() {
        return;
    }
    // SAFETY: libsrt passes a NUL-terminated message valid during the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    // libsrt prefixes its own time and thread; keep what follows the area.
    let text = text.trim_end();
    let text = text.split_once(": ").map_or(text, |(_, rest)| rest);
    // The listener closed under a blocked accept is how the origin stops.
    let expected =
        text.starts_with("srt_accept: listener socket") && text.ends_with("is already closed");
    if level <= 3 && !expected {
        tracing::warn!(target: "strom_origin::srt::libsrt", "{text}");
    } else {
        tracing::info!(target: "strom_origin::srt::libsrt", "{text}");
    }
}

/// A caller's address for the log, pseudonymous.
fn shown(remote: Option<SocketAddr>) -> String {
    remote.map_or_else(|| "unknown".into(), strom_relay::pseudonym::addr)
}

/// A bound libsrt listener with strom's callback installed.
pub(crate) struct SrtListener {
    sock: ffi::SRTSOCKET,
    addr: SocketAddr,
    ctx: Arc<SrtContext>,
    closed: std::sync::atomic::AtomicBool,
}

fn check(rc: c_int, what: &str) -> anyhow::Result<()> {
    if rc == ffi::SRT_ERROR {
        let (code, text) = ffi::last_error();
        bail!("{what}: {text} (SRT error {code})");
    }
    Ok(())
}

fn set_int(sock: ffi::SRTSOCKET, opt: c_int, value: c_int, what: &str) -> anyhow::Result<()> {
    // SAFETY: an int option, passed by pointer with its size.
    let rc = unsafe {
        ffi::srt_setsockflag(
            sock,
            opt,
            (&value as *const c_int).cast(),
            std::mem::size_of::<c_int>() as c_int,
        )
    };
    check(rc, what)
}

/// Initialises libsrt, once per process.
fn startup() {
    static STARTUP: std::sync::Once = std::sync::Once::new();
    STARTUP.call_once(|| {
        // SAFETY: library initialisation, once per process; the handler
        // is a plain function that copies its strings.
        unsafe {
            ffi::srt_startup();
            // Warnings and errors (syslog levels), into strom's log.
            ffi::srt_setloglevel(4);
            ffi::srt_setloghandler(std::ptr::null_mut(), Some(library_log));
        }
    });
}

impl SrtListener {
    /// Binds `addr` (UDP) and starts listening.
    pub(crate) fn bind(addr: SocketAddr, ctx: Arc<SrtContext>) -> anyhow::Result<Self> {
        startup();
        // SAFETY: plain libsrt calls on a socket this function owns.
        let sock = unsafe { ffi::srt_create_socket() };
        if sock == ffi::SRT_INVALID_SOCK {
            let (_, text) = ffi::last_error();
            bail!("creating an SRT socket: {text}");
        }
        let mut listener = Self {
            sock,
            addr,
            ctx,
            closed: AtomicBool::new(false),
        };
        // Encryption is enforced: a caller whose encryption does not match the
        // stream's is refused in the handshake rather than sending garbage.
        set_int(
            sock,
            ffi::SRTO_ENFORCEDENCRYPTION,
            1,
            "SRTO_ENFORCEDENCRYPTION",
        )?;
        let (raw, len) = ffi::to_raw(addr);
        // SAFETY: `raw` holds a valid sockaddr of `len` bytes.
        check(
            unsafe { ffi::srt_bind(sock, (&raw as *const libc::sockaddr_storage).cast(), len) },
            &format!("binding SRT on {addr}"),
        )?;
        // SAFETY: the context outlives the callback: `Drop` closes the socket
        // (which removes the callback) before the Arc is released.
        let opaque = Arc::as_ptr(&listener.ctx) as *mut c_void;
        check(
            unsafe { ffi::srt_listen_callback(sock, Some(on_handshake), opaque) },
            "installing the SRT listener callback",
        )?;
        check(unsafe { ffi::srt_listen(sock, 64) }, "SRT listen")?;
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: storage is large enough; libsrt writes at most `len` bytes.
        if unsafe {
            ffi::srt_getsockname(
                sock,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        } != ffi::SRT_ERROR
        {
            if let Some(a) =
                unsafe { ffi::from_raw((&storage as *const libc::sockaddr_storage).cast()) }
            {
                listener.addr = a;
            }
        }
        Ok(listener)
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket once (a blocked accept returns).
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            // SAFETY: our own socket, closed once; the callback goes with it.
            unsafe { ffi::srt_close(self.sock) };
        }
    }

    /// Accepts callers until dropped (the origin stops); each connection
    /// gets a thread. Dropping the future closes the listener and every
    /// running push, so no thread stays blocked in libsrt.
    pub(crate) async fn serve(self) -> anyhow::Result<()> {
        struct StopOnDrop(Arc<SrtListener>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.ctx.stop();
                self.0.close();
            }
        }
        let listener = Arc::new(self);
        let _stop = StopOnDrop(listener.clone());
        // Admissions libsrt refused after the callback are also forgotten
        // here, so their places come back when no other caller comes.
        let ctx = listener.ctx.clone();
        let _forget = strom_relay::AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                ctx.forget_stale(Instant::now());
            }
        }));
        let accepting = listener.clone();
        tokio::task::spawn_blocking(move || accepting.accept_loop())
            .await
            .map_err(|e| anyhow!("SRT accept loop ended: {e}"))?
    }

    fn accept_loop(&self) -> anyhow::Result<()> {
        loop {
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
            // SAFETY: blocking accept on our listener; storage as above.
            let sock = unsafe {
                ffi::srt_accept(
                    self.sock,
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                )
            };
            if self.ctx.stopping.load(Ordering::SeqCst) {
                if sock != ffi::SRT_INVALID_SOCK {
                    // SAFETY: just accepted, never shared.
                    unsafe { ffi::srt_close(sock) };
                }
                return Ok(());
            }
            if sock == ffi::SRT_INVALID_SOCK {
                let (code, text) = ffi::last_error();
                tracing::warn!(code, error = %text, "SRT accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            self.ctx.forget_stale(Instant::now());
            let admitted = self.ctx.pending().remove(&sock);
            let Some(mut admitted) = admitted else {
                // Every accepted socket went through the callback; this one's
                // admission expired. Nothing to publish to.
                tracing::warn!("SRT connection without an admitted handshake closed");
                unsafe { ffi::srt_close(sock) };
                continue;
            };
            // libsrt has finished the handshake, passphrase included.
            admitted.place = None;
            self.ctx.live().insert(sock);
            let ctx = self.ctx.clone();
            let spawned = std::thread::Builder::new()
                .name("srt-ingest".into())
                .spawn(move || connection(sock, admitted, &ctx));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "SRT connection thread could not start");
                self.ctx.close_live(sock);
            }
        }
    }
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        self.close();
    }
}

/// One caller's push, start to end, on its own thread.
fn connection(sock: ffi::SRTSOCKET, admitted: Admitted, ctx: &SrtContext) {
    serve_connection(sock, admitted, ctx, publish)
}

/// What runs a push on its connection ([`publish`]; tests give others).
type Push = fn(
    ffi::SRTSOCKET,
    Publisher,
    &PushOptions,
    &str,
    Option<SocketAddr>,
    &SrtContext,
) -> anyhow::Result<()>;

/// [`connection`] with the push given. However `push` ends, a panic
/// included, the socket is closed and the link's statistics removed.
fn serve_connection(sock: ffi::SRTSOCKET, admitted: Admitted, ctx: &SrtContext, push: Push) {
    let counters = &ctx.counters;
    counters.ingest.connections.fetch_add(1, Ordering::Relaxed);
    let Admitted {
        publisher,
        options,
        label,
        remote,
        ..
    } = admitted;
    let namespace = publisher.namespace.clone();
    let link = link_key(&namespace, &options);
    // A panic (in the MPEG-TS demuxer, say) unwinds `push` alone: its
    // publish session is released on the way, and the cleanup below runs.
    let result = contained(|| push(sock, publisher, &options, &label, remote, ctx)).unwrap_or_else(
        |panicked| {
            counters.ingest.panics.fetch_add(1, Ordering::Relaxed);
            Err(anyhow!(
                "the SRT ingest failed on this input ({})",
                panicked.0
            ))
        },
    );
    counters
        .links
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&link);
    ctx.close_live(sock);
    match result {
        Ok(()) => tracing::info!(remote = %shown(remote), %namespace, "SRT publish finished"),
        Err(err) => {
            counters.ingest.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %shown(remote), %namespace, error = %format!("{err:#}"), "SRT connection closed on error");
        }
    }
}

fn publish(
    sock: ffi::SRTSOCKET,
    publisher: Publisher,
    options: &PushOptions,
    label: &str,
    remote: Option<SocketAddr>,
    ctx: &SrtContext,
) -> anyhow::Result<()> {
    let namespace = publisher.namespace.clone();
    let mut session = match ctx.publications.claim(namespace.clone(), options) {
        Ok(s) => s,
        Err(err) => {
            ctx.counters.refused("already_live");
            bail!("publish refused: {err}");
        }
    };
    tracing::info!(
        remote = %shown(remote),
        %namespace,
        key = %label,
        role = options.role().as_str(),
        rendition = options.rendition.as_deref().unwrap_or("main"),
        standby = !session.is_active(),
        "SRT publish started"
    );
    set_int(sock, ffi::SRTO_RCVTIMEO, 1000, "SRTO_RCVTIMEO")?;
    let revoked = Arc::new(AtomicBool::new(false));
    let _watch = publisher.revocation.map(|mut watch| {
        let revoked = revoked.clone();
        strom_relay::AbortOnDrop(ctx.runtime.spawn(async move {
            watch.revoked().await;
            revoked.store(true, Ordering::Relaxed);
        }))
    });
    let mut ingest = TsIngest::new();
    let mut buf = vec![0u8; MESSAGE];
    let mut last_data = Instant::now();
    let mut last_stats = Instant::now();
    let link = link_key(&namespace, options);
    loop {
        if revoked.load(Ordering::Relaxed) {
            ctx.counters.ingest.revoked.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%namespace, "publish stopped: the publish credential was revoked");
            return Ok(());
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            sample(sock, &link, &ctx.counters);
        }
        // SAFETY: `buf` is MESSAGE bytes long.
        let n = unsafe { ffi::srt_recvmsg(sock, buf.as_mut_ptr().cast(), buf.len() as c_int) };
        if n > 0 {
            last_data = Instant::now();
            let data = &buf[..n as usize];
            ctx.counters
                .ingest
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let tags = ingest
                .push(data)
                .map_err(|e| anyhow!("malformed MPEG-TS: {e}"))?;
            push_tags(&mut session, tags)?;
            continue;
        }
        let (code, text) = ffi::last_error();
        if n < 0 && (code == ffi::SRT_EASYNCRCV || code == ffi::SRT_ETIMEOUT) {
            if last_data.elapsed() > READ_TIMEOUT {
                bail!("publisher sent nothing for {} s", READ_TIMEOUT.as_secs());
            }
            continue;
        }
        // The caller closed or the link broke: publish what is buffered.
        push_tags(&mut session, ingest.finish())?;
        tracing::debug!(%namespace, code, error = %text, "SRT connection ended");
        return Ok(());
    }
}

fn push_tags(session: &mut crate::publish::PublishSession, tags: Vec<TsTag>) -> anyhow::Result<()> {
    for tag in tags {
        let result = match tag {
            TsTag::Video { timestamp_ms, tag } => session.push_video_tag(timestamp_ms, &tag),
            TsTag::Audio { timestamp_ms, tag } => session.push_audio_tag(timestamp_ms, &tag),
        };
        result.map_err(|e| anyhow!("publish of {} stopped: {e}", session.namespace))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
