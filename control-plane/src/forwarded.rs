//! The address a request came from, when it passed through reverse proxies
//! the operator trusts (`control_plane.trusted_proxies`): the TLS proxy in
//! front of the control plane makes every request come from one address,
//! so rate limits keyed on the TCP peer would put all clients into one
//! bucket. Pure: the peer, the headers and the trusted ranges are arguments.
//!
//! Only a peer inside a trusted range may name another client. The chain in
//! `Forwarded` (RFC 7239) or, failing that, `X-Forwarded-For` is read from
//! the right (the hop nearest to us) and the first address that is not a
//! trusted proxy is the client: a client cannot spoof its way past a proxy
//! that appends what it saw.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses `trusted_proxies` entries: CIDRs (`10.0.0.0/8`) or single
/// addresses.
pub(crate) fn parse_trusted(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|e| {
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{e:?} is not an address or CIDR"))
        })
        .collect()
}

/// The client's address: `peer` itself unless `peer` is a trusted proxy.
pub(crate) fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_for(headers).or_else(|| x_forwarded_for(headers));
    let Some(chain) = chain else {
        return peer;
    };
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            // An unreadable or obfuscated hop ends what we can trust: the
            // last proxy that spoke is the best we know.
            None => return client,
            Some(a) => {
                let a = canonical(a);
                if !is_trusted(&a) {
                    return a;
                }
                client = a;
            }
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses as IPv4, so ranges match either way.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

/// The `for=` values of every `Forwarded` header, in order; `None` for a
/// hop given as `unknown` or an obfuscated identifier.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all("forwarded") {
        any = true;
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in text.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            if let Some(node) = node {
                hops.push(parse_node(node));
            }
        }
    }
    any.then_some(hops)
}

/// A `Forwarded` node: `192.0.2.1`, `"192.0.2.1:443"`, `"[2001:db8::1]:80"`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(a) = node.parse() {
        return Some(a);
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all("x-forwarded-for") {
        any = true;
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(text.split(',').map(|h| parse_node(h.trim())));
    }
    any.then_some(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let trusted = parse_trusted(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, &[(&str, &str)], &str)] = &[
            // Straight from a client: its headers say nothing.
            (
                "203.0.113.9",
                &[("x-forwarded-for", "198.51.100.1")],
                "203.0.113.9",
            ),
            // Through the proxy.
            (
                "10.1.2.3",
                &[("x-forwarded-for", "198.51.100.1")],
                "198.51.100.1",
            ),
            (
                "10.1.2.3",
                &[("forwarded", "for=198.51.100.1;proto=https")],
                "198.51.100.1",
            ),
            (
                "10.1.2.3",
                &[("forwarded", "for=\"[2001:db8::7]:4711\"")],
                "2001:db8::7",
            ),
            (
                "10.1.2.3",
                &[("forwarded", "for=\"198.51.100.1:443\"")],
                "198.51.100.1",
            ),
            // A client's own (spoofed) entry sits left of what the proxy saw.
            (
                "10.1.2.3",
                &[("x-forwarded-for", "1.1.1.1, 198.51.100.1")],
                "198.51.100.1",
            ),
            // Two trusted proxies in a row.
            (
                "10.1.2.3",
                &[("x-forwarded-for", "198.51.100.1, 10.9.9.9")],
                "198.51.100.1",
            ),
            // Forwarded wins over X-Forwarded-For.
            (
                "10.1.2.3",
                &[
                    ("forwarded", "for=192.0.2.60"),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
                "192.0.2.60",
            ),
            // Several Forwarded headers form one list.
            (
                "10.1.2.3",
                &[
                    ("forwarded", "for=192.0.2.60"),
                    ("forwarded", "for=10.2.2.2"),
                ],
                "192.0.2.60",
            ),
            // Unknown hops stop the walk at the last proxy.
            ("10.1.2.3", &[("forwarded", "for=unknown")], "10.1.2.3"),
            ("10.1.2.3", &[("x-forwarded-for", "garbage")], "10.1.2.3"),
            // No header: the proxy itself.
            ("10.1.2.3", &[], "10.1.2.3"),
            // IPv4-mapped peers match IPv4 ranges.
            (
                "::ffff:10.1.2.3",
                &[("x-forwarded-for", "198.51.100.1")],
                "198.51.100.1",
            ),
            (
                "::1",
                &[("x-forwarded-for", "198.51.100.1")],
                "198.51.100.1",
            ),
        ];
        for (peer, h, want) in cases {
            assert_eq!(
                client_address(ip(peer), &headers(h), &trusted),
                ip(want),
                "{peer} {h:?}"
            );
        }
        // Nothing trusted: headers never count.
        assert_eq!(
            client_address(
                ip("10.1.2.3"),
                &headers(&[("x-forwarded-for", "198.51.100.1")]),
                &[]
            ),
            ip("10.1.2.3")
        );
        assert!(parse_trusted(&["not-a-net".into()]).is_err());
    }
}
