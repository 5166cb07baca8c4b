//! Network addresses in logs, pseudonymous (GDPR: a viewer's or
//! broadcaster's IP address is personal data). An address is shown as a
//! keyed hash of its IP — the key is random per process and never leaves
//! memory — so one run's log lines about one peer can be correlated, but
//! nobody can read the address back. Loopback stays readable (no person
//! behind it); ports are kept.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

fn key() -> &'static std::collections::hash_map::RandomState {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

/// `ip-3f2a9c1b0d4e5f60` for an IP address, `loopback` for 127.0.0.0/8 and ::1.
pub fn ip(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return "loopback".into();
    }
    format!("ip-{:016x}", key().hash_one(ip))
}

/// [`ip`] with the port: `ip-3f2a9c1b0d4e5f60:51234`.
pub fn addr(addr: SocketAddr) -> String {
    format!("{}:{}", ip(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_hidden_but_stable_within_a_run() {
        let a: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let b: SocketAddr = "198.51.100.8:5000".parse().unwrap();
        let shown = addr(a);
        assert!(!shown.contains("198.51"), "{shown}");
        assert_eq!(shown, addr(a));
        assert_ne!(ip(a.ip()), ip(b.ip()));
        assert!(shown.ends_with(":5000"));
        assert_eq!(addr("127.0.0.1:9".parse().unwrap()), "loopback:9");
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:5000".parse().unwrap();
        assert_eq!(addr(mapped), shown);
    }
}
