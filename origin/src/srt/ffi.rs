//! The part of libsrt's C API (srt/srt.h, 1.5) the SRT ingest calls. The
//! system library is used as is (Debian: libsrt-gnutls-dev, the same library
//! ffmpeg links); these are declarations only.

#![allow(
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::upper_case_acronyms
)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::SocketAddr;

pub(super) type SRTSOCKET = i32;
pub(super) const SRT_INVALID_SOCK: SRTSOCKET = -1;
pub(super) const SRT_ERROR: c_int = -1;

// SRT_SOCKOPT values used.
pub(super) const SRTO_RCVSYN: c_int = 2;
pub(super) const SRTO_RCVTIMEO: c_int = 14;
pub(super) const SRTO_REUSEADDR: c_int = 15;
pub(super) const SRTO_PASSPHRASE: c_int = 26;
pub(super) const SRTO_PBKEYLEN: c_int = 27;
pub(super) const SRTO_RCVLATENCY: c_int = 43;
pub(super) const SRTO_STREAMID: c_int = 46;
pub(super) const SRTO_TRANSTYPE: c_int = 50;
pub(super) const SRTO_ENFORCEDENCRYPTION: c_int = 53;

// SRT_ERRNO values the receive loop tells apart.
/// No data in time (blocking mode with SRTO_RCVTIMEO).
pub(super) const SRT_EASYNCRCV: c_int = 6002;
pub(super) const SRT_ETIMEOUT: c_int = 6003;

// Rejection codes a listener callback may set (srt/access_control.h).
pub(super) const SRT_REJX_BAD_REQUEST: c_int = 1400;
pub(super) const SRT_REJX_UNAUTHORIZED: c_int = 1401;
/// Too many requests (the admission limits).
pub(super) const SRT_REJX_OVERLOAD: c_int = 1402;
pub(super) const SRT_REJX_FORBIDDEN: c_int = 1403;
pub(super) const SRT_REJX_NOTFOUND: c_int = 1404;
pub(super) const SRT_REJX_BAD_MODE: c_int = 1405;
pub(super) const SRT_REJX_CONFLICT: c_int = 1409;
pub(super) const SRT_REJX_ISE: c_int = 1500;
pub(super) const SRT_REJX_DOWN: c_int = 1503;

/// `struct CBytePerfMon` of libsrt 1.5 (srt.h), field for field.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct CBytePerfMon {
    pub(super) msTimeStamp: i64,
    pub(super) pktSentTotal: i64,
    pub(super) pktRecvTotal: i64,
    pub(super) pktSndLossTotal: c_int,
    pub(super) pktRcvLossTotal: c_int,
    pub(super) pktRetransTotal: c_int,
    pub(super) pktSentACKTotal: c_int,
    pub(super) pktRecvACKTotal: c_int,
    pub(super) pktSentNAKTotal: c_int,
    pub(super) pktRecvNAKTotal: c_int,
    pub(super) usSndDurationTotal: i64,
    pub(super) pktSndDropTotal: c_int,
    pub(super) pktRcvDropTotal: c_int,
    pub(super) pktRcvUndecryptTotal: c_int,
    pub(super) byteSentTotal: u64,
    pub(super) byteRecvTotal: u64,
    pub(super) byteRcvLossTotal: u64,
    pub(super) byteRetransTotal: u64,
    pub(super) byteSndDropTotal: u64,
    pub(super) byteRcvDropTotal: u64,
    pub(super) byteRcvUndecryptTotal: u64,
    pub(super) pktSent: i64,
    pub(super) pktRecv: i64,
    pub(super) pktSndLoss: c_int,
    pub(super) pktRcvLoss: c_int,
    pub(super) pktRetrans: c_int,
    pub(super) pktRcvRetrans: c_int,
    pub(super) pktSentACK: c_int,
    pub(super) pktRecvACK: c_int,
    pub(super) pktSentNAK: c_int,
    pub(super) pktRecvNAK: c_int,
    pub(super) mbpsSendRate: f64,
    pub(super) mbpsRecvRate: f64,
    pub(super) usSndDuration: i64,
    pub(super) pktReorderDistance: c_int,
    pub(super) pktRcvAvgBelatedTime: f64,
    pub(super) pktRcvBelated: i64,
    pub(super) pktSndDrop: c_int,
    pub(super) pktRcvDrop: c_int,
    pub(super) pktRcvUndecrypt: c_int,
    pub(super) byteSent: u64,
    pub(super) byteRecv: u64,
    pub(super) byteRcvLoss: u64,
    pub(super) byteRetrans: u64,
    pub(super) byteSndDrop: u64,
    pub(super) byteRcvDrop: u64,
    pub(super) byteRcvUndecrypt: u64,
    pub(super) usPktSndPeriod: f64,
    pub(super) pktFlowWindow: c_int,
    pub(super) pktCongestionWindow: c_int,
    pub(super) pktFlightSize: c_int,
    pub(super) msRTT: f64,
    pub(super) mbpsBandwidth: f64,
    pub(super) byteAvailSndBuf: c_int,
    pub(super) byteAvailRcvBuf: c_int,
    pub(super) mbpsMaxBW: f64,
    pub(super) byteMSS: c_int,
    pub(super) pktSndBuf: c_int,
    pub(super) byteSndBuf: c_int,
    pub(super) msSndBuf: c_int,
    pub(super) msSndTsbPdDelay: c_int,
    pub(super) pktRcvBuf: c_int,
    pub(super) byteRcvBuf: c_int,
    pub(super) msRcvBuf: c_int,
    pub(super) msRcvTsbPdDelay: c_int,
    pub(super) pktSndFilterExtraTotal: c_int,
    pub(super) pktRcvFilterExtraTotal: c_int,
    pub(super) pktRcvFilterSupplyTotal: c_int,
    pub(super) pktRcvFilterLossTotal: c_int,
    pub(super) pktSndFilterExtra: c_int,
    pub(super) pktRcvFilterExtra: c_int,
    pub(super) pktRcvFilterSupply: c_int,
    pub(super) pktRcvFilterLoss: c_int,
    pub(super) pktReorderTolerance: c_int,
    pub(super) pktSentUniqueTotal: i64,
    pub(super) pktRecvUniqueTotal: i64,
    pub(super) byteSentUniqueTotal: u64,
    pub(super) byteRecvUniqueTotal: u64,
    pub(super) pktSentUnique: i64,
    pub(super) pktRecvUnique: i64,
    pub(super) byteSentUnique: u64,
    pub(super) byteRecvUnique: u64,
}

pub(super) type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: SRTSOCKET,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

pub(super) type LogHandler = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

#[link(name = "srt-gnutls")]
extern "C" {
    pub(super) fn srt_startup() -> c_int;
    pub(super) fn srt_create_socket() -> SRTSOCKET;
    pub(super) fn srt_bind(u: SRTSOCKET, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    pub(super) fn srt_listen(u: SRTSOCKET, backlog: c_int) -> c_int;
    pub(super) fn srt_listen_callback(
        lsn: SRTSOCKET,
        hook: Option<ListenCallback>,
        opaque: *mut c_void,
    ) -> c_int;
    pub(super) fn srt_accept(
        u: SRTSOCKET,
        addr: *mut libc::sockaddr,
        addrlen: *mut c_int,
    ) -> SRTSOCKET;
    pub(super) fn srt_close(u: SRTSOCKET) -> c_int;
    /// `SRT_SOCKSTATUS`: 1 init … 5 connected, 6 broken, 7 closing, 8 closed,
    /// 9 nonexistent.
    pub(super) fn srt_getsockstate(u: SRTSOCKET) -> c_int;
    pub(super) fn srt_getsockname(
        u: SRTSOCKET,
        name: *mut libc::sockaddr,
        namelen: *mut c_int,
    ) -> c_int;
    pub(super) fn srt_setsockflag(
        u: SRTSOCKET,
        opt: c_int,
        optval: *const c_void,
        optlen: c_int,
    ) -> c_int;
    pub(super) fn srt_getsockflag(
        u: SRTSOCKET,
        opt: c_int,
        optval: *mut c_void,
        optlen: *mut c_int,
    ) -> c_int;
    pub(super) fn srt_recvmsg(u: SRTSOCKET, buf: *mut c_char, len: c_int) -> c_int;
    pub(super) fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    pub(super) fn srt_getlasterror_str() -> *const c_char;
    pub(super) fn srt_setrejectreason(sock: SRTSOCKET, value: c_int) -> c_int;
    pub(super) fn srt_bstats(u: SRTSOCKET, perf: *mut CBytePerfMon, clear: c_int) -> c_int;
    pub(super) fn srt_setloglevel(level: c_int);
    pub(super) fn srt_setloghandler(opaque: *mut c_void, handler: Option<LogHandler>);
}

/// The calling thread's last libsrt error: (code, text).
pub(super) fn last_error() -> (c_int, String) {
    // SAFETY: both calls only read thread-local state of the library; the
    // string is copied before anything else can run on this thread.
    unsafe {
        let code = srt_getlasterror(std::ptr::null_mut());
        let text = srt_getlasterror_str();
        let text = if text.is_null() {
            String::new()
        } else {
            CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        (code, text)
    }
}

/// A socket address as libc's `sockaddr_storage`, with its length.
pub(super) fn to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut _) as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut _) as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}

/// The address behind a `sockaddr` pointer from libsrt, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` is null or points to a valid sockaddr of its family's size.
pub(super) unsafe fn from_raw(addr: *const libc::sockaddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    match i32::from((*addr).sa_family) {
        libc::AF_INET => {
            let a = &*(addr as *const libc::sockaddr_in);
            let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            let a = &*(addr as *const libc::sockaddr_in6);
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}
