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

pub type SRTSOCKET = i32;
pub const SRT_INVALID_SOCK: SRTSOCKET = -1;
pub const SRT_ERROR: c_int = -1;

// SRT_SOCKOPT values used.
pub const SRTO_RCVSYN: c_int = 2;
pub const SRTO_RCVTIMEO: c_int = 14;
pub const SRTO_REUSEADDR: c_int = 15;
pub const SRTO_PASSPHRASE: c_int = 26;
pub const SRTO_PBKEYLEN: c_int = 27;
pub const SRTO_RCVLATENCY: c_int = 43;
pub const SRTO_STREAMID: c_int = 46;
pub const SRTO_TRANSTYPE: c_int = 50;
pub const SRTO_ENFORCEDENCRYPTION: c_int = 53;

// SRT_ERRNO values the receive loop tells apart.
/// No data in time (blocking mode with SRTO_RCVTIMEO).
pub const SRT_EASYNCRCV: c_int = 6002;
pub const SRT_ETIMEOUT: c_int = 6003;

// Rejection codes a listener callback may set (srt/access_control.h).
pub const SRT_REJX_BAD_REQUEST: c_int = 1400;
pub const SRT_REJX_UNAUTHORIZED: c_int = 1401;
/// Too many requests (the admission limits).
pub const SRT_REJX_OVERLOAD: c_int = 1402;
pub const SRT_REJX_FORBIDDEN: c_int = 1403;
pub const SRT_REJX_NOTFOUND: c_int = 1404;
pub const SRT_REJX_BAD_MODE: c_int = 1405;
pub const SRT_REJX_CONFLICT: c_int = 1409;
pub const SRT_REJX_ISE: c_int = 1500;
pub const SRT_REJX_DOWN: c_int = 1503;

/// `struct CBytePerfMon` of libsrt 1.5 (srt.h), field for field.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct CBytePerfMon {
    pub msTimeStamp: i64,
    pub pktSentTotal: i64,
    pub pktRecvTotal: i64,
    pub pktSndLossTotal: c_int,
    pub pktRcvLossTotal: c_int,
    pub pktRetransTotal: c_int,
    pub pktSentACKTotal: c_int,
    pub pktRecvACKTotal: c_int,
    pub pktSentNAKTotal: c_int,
    pub pktRecvNAKTotal: c_int,
    pub usSndDurationTotal: i64,
    pub pktSndDropTotal: c_int,
    pub pktRcvDropTotal: c_int,
    pub pktRcvUndecryptTotal: c_int,
    pub byteSentTotal: u64,
    pub byteRecvTotal: u64,
    pub byteRcvLossTotal: u64,
    pub byteRetransTotal: u64,
    pub byteSndDropTotal: u64,
    pub byteRcvDropTotal: u64,
    pub byteRcvUndecryptTotal: u64,
    pub pktSent: i64,
    pub pktRecv: i64,
    pub pktSndLoss: c_int,
    pub pktRcvLoss: c_int,
    pub pktRetrans: c_int,
    pub pktRcvRetrans: c_int,
    pub pktSentACK: c_int,
    pub pktRecvACK: c_int,
    pub pktSentNAK: c_int,
    pub pktRecvNAK: c_int,
    pub mbpsSendRate: f64,
    pub mbpsRecvRate: f64,
    pub usSndDuration: i64,
    pub pktReorderDistance: c_int,
    pub pktRcvAvgBelatedTime: f64,
    pub pktRcvBelated: i64,
    pub pktSndDrop: c_int,
    pub pktRcvDrop: c_int,
    pub pktRcvUndecrypt: c_int,
    pub byteSent: u64,
    pub byteRecv: u64,
    pub byteRcvLoss: u64,
    pub byteRetrans: u64,
    pub byteSndDrop: u64,
    pub byteRcvDrop: u64,
    pub byteRcvUndecrypt: u64,
    pub usPktSndPeriod: f64,
    pub pktFlowWindow: c_int,
    pub pktCongestionWindow: c_int,
    pub pktFlightSize: c_int,
    pub msRTT: f64,
    pub mbpsBandwidth: f64,
    pub byteAvailSndBuf: c_int,
    pub byteAvailRcvBuf: c_int,
    pub mbpsMaxBW: f64,
    pub byteMSS: c_int,
    pub pktSndBuf: c_int,
    pub byteSndBuf: c_int,
    pub msSndBuf: c_int,
    pub msSndTsbPdDelay: c_int,
    pub pktRcvBuf: c_int,
    pub byteRcvBuf: c_int,
    pub msRcvBuf: c_int,
    pub msRcvTsbPdDelay: c_int,
    pub pktSndFilterExtraTotal: c_int,
    pub pktRcvFilterExtraTotal: c_int,
    pub pktRcvFilterSupplyTotal: c_int,
    pub pktRcvFilterLossTotal: c_int,
    pub pktSndFilterExtra: c_int,
    pub pktRcvFilterExtra: c_int,
    pub pktRcvFilterSupply: c_int,
    pub pktRcvFilterLoss: c_int,
    pub pktReorderTolerance: c_int,
    pub pktSentUniqueTotal: i64,
    pub pktRecvUniqueTotal: i64,
    pub byteSentUniqueTotal: u64,
    pub byteRecvUniqueTotal: u64,
    pub pktSentUnique: i64,
    pub pktRecvUnique: i64,
    pub byteSentUnique: u64,
    pub byteRecvUnique: u64,
}

pub type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: SRTSOCKET,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

pub type LogHandler = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

#[link(name = "srt-gnutls")]
extern "C" {
    pub fn srt_startup() -> c_int;
    pub fn srt_create_socket() -> SRTSOCKET;
    pub fn srt_bind(u: SRTSOCKET, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    pub fn srt_listen(u: SRTSOCKET, backlog: c_int) -> c_int;
    pub fn srt_listen_callback(
        lsn: SRTSOCKET,
        hook: Option<ListenCallback>,
        opaque: *mut c_void,
    ) -> c_int;
    pub fn srt_accept(u: SRTSOCKET, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> SRTSOCKET;
    pub fn srt_close(u: SRTSOCKET) -> c_int;
    /// `SRT_SOCKSTATUS`: 1 init … 5 connected, 6 broken, 7 closing, 8 closed,
    /// 9 nonexistent.
    pub fn srt_getsockstate(u: SRTSOCKET) -> c_int;
    pub fn srt_getsockname(u: SRTSOCKET, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    pub fn srt_setsockflag(u: SRTSOCKET, opt: c_int, optval: *const c_void, optlen: c_int)
        -> c_int;
    pub fn srt_getsockflag(
        u: SRTSOCKET,
        opt: c_int,
        optval: *mut c_void,
        optlen: *mut c_int,
    ) -> c_int;
    pub fn srt_recvmsg(u: SRTSOCKET, buf: *mut c_char, len: c_int) -> c_int;
    pub fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    pub fn srt_getlasterror_str() -> *const c_char;
    pub fn srt_setrejectreason(sock: SRTSOCKET, value: c_int) -> c_int;
    pub fn srt_bstats(u: SRTSOCKET, perf: *mut CBytePerfMon, clear: c_int) -> c_int;
    pub fn srt_setloglevel(level: c_int);
    pub fn srt_setloghandler(opaque: *mut c_void, handler: Option<LogHandler>);
}

/// The calling thread's last libsrt error: (code, text).
pub fn last_error() -> (c_int, String) {
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
pub fn to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
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
pub unsafe fn from_raw(addr: *const libc::sockaddr) -> Option<SocketAddr> {
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
