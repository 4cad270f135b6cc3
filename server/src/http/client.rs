//! The client's address behind proxies: only a peer inside a trusted
//! network (`[http] trusted_proxies`) is believed about who its client is.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address
//! it received from, so the rightmost entry not itself a trusted proxy is
//! the client the nearest untrusted hop vouches for; entries left of it may
//! be made up by the client. Without the header, `X-Real-IP` is taken as
//! given by the trusted peer. A forwarded address has no port (0).

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use ipnet::IpNet;

pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From the configured list (already checked by config validation;
    /// an entry that does not parse trusts nobody).
    pub fn new(networks: &[String]) -> TrustedProxies {
        TrustedProxies(networks.iter().filter_map(|text| crate::config::parse_network(text)).collect())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The address requests on a connection from `peer` are made for.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let lines = headers.get_all("x-forwarded-for");
        if lines.iter().next().is_some() {
            // Rightmost header line first, and within it the rightmost hop,
            // each decoded alone: what the client wrote left of the first
            // untrusted hop (which may be anything, even bytes that are no
            // text) is never read.
            for line in lines.iter().rev() {
                for hop in line.as_bytes().rsplit(|byte| *byte == b',') {
                    let Some(address) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
                        return peer;
                    };
                    if !self.trusts(address) {
                        return SocketAddr::new(address, 0);
                    }
                }
            }
            return peer;
        }
        headers
            .get("x-real-ip")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_hop)
            .map_or(peer, |address| SocketAddr::new(address, 0))
    }
}

impl TrustedProxies {
    /// What a trusted proxy (`peer`) says in header `name` about the
    /// request as its client made it (`X-Forwarded-Proto`,
    /// `X-Forwarded-Host`): the nearest proxy's value, the rightmost. None
    /// from anyone else.
    pub fn forwarded<'h>(&self, peer: SocketAddr, headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        if !self.trusts(peer.ip()) {
            return None;
        }
        let last = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        last.rsplit(',').next().map(str::trim).filter(|value| !value.is_empty())
    }
}

/// One hop: an address, bracketed or with a port as some proxies write it.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    text.parse::<SocketAddr>().ok().map(|address| canonical(address.ip()))
}

/// An IPv4 address mapped into IPv6 (a dual-stack listener's peers) is
/// the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    const PEER: &str = "10.0.0.5:4000";

    #[test]
    fn nobody_is_trusted_by_default() {
        let trusted = TrustedProxies::new(&[]);
        let peer: SocketAddr = PEER.parse().unwrap();
        assert_eq!(trusted.client(peer, &headers(&[("x-forwarded-for", "203.0.113.9")])), peer);
        assert_eq!(trusted.client(peer, &headers(&[("x-real-ip", "203.0.113.9")])), peer);
    }

    #[test]
    fn an_untrusted_peer_is_not_believed() {
        let trusted = TrustedProxies::new(&["192.168.0.0/16".to_owned()]);
        let peer: SocketAddr = PEER.parse().unwrap();
        assert_eq!(trusted.client(peer, &headers(&[("x-forwarded-for", "203.0.113.9")])), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::new(&["10.0.0.0/8".to_owned()]);
        let peer: SocketAddr = PEER.parse().unwrap();
        // The client made up 1.1.1.1; 203.0.113.9 reached the first proxy.
        let forwarded = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(trusted.client(peer, &forwarded), "203.0.113.9:0".parse().unwrap());
        // Split over two header lines, the same.
        let split = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        assert_eq!(trusted.client(peer, &split), "203.0.113.9:0".parse().unwrap());
    }

    #[test]
    fn real_ip_and_ports_and_garbage() {
        let trusted = TrustedProxies::new(&["10.0.0.5".to_owned()]);
        let peer: SocketAddr = PEER.parse().unwrap();
        assert_eq!(
            trusted.client(peer, &headers(&[("x-real-ip", "2001:db8::1")])),
            "[2001:db8::1]:0".parse().unwrap()
        );
        assert_eq!(
            trusted.client(peer, &headers(&[("x-forwarded-for", "[2001:db8::2]:443")])),
            "[2001:db8::2]:0".parse().unwrap()
        );
        assert_eq!(
            trusted.client(peer, &headers(&[("x-forwarded-for", "203.0.113.9:55")])),
            "203.0.113.9:0".parse().unwrap()
        );
        // A hop that is no address: believe nothing of the chain.
        assert_eq!(trusted.client(peer, &headers(&[("x-forwarded-for", "not-an-ip")])), peer);
        // Only trusted hops: the peer.
        assert_eq!(trusted.client(peer, &headers(&[("x-forwarded-for", "10.0.0.5")])), peer);
    }

    #[test]
    fn bytes_a_client_made_up_left_of_its_real_address_are_never_read() {
        let trusted = TrustedProxies::new(&["127.0.0.1".to_owned()]);
        let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        // nginx's $proxy_add_x_forwarded_for: what the client sent, then its address.
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            hyper::header::HeaderValue::from_bytes(b"\xc3\xa9, 203.0.113.9").unwrap(),
        );
        assert_eq!(trusted.client(peer, &headers), "203.0.113.9:0".parse().unwrap());
    }

    #[test]
    fn mapped_ipv4_peers_are_ipv4() {
        let trusted = TrustedProxies::new(&["127.0.0.1".to_owned()]);
        let peer: SocketAddr = "[::ffff:127.0.0.1]:9000".parse().unwrap();
        assert_eq!(
            trusted.client(peer, &headers(&[("x-real-ip", "198.51.100.4")])),
            "198.51.100.4:0".parse().unwrap()
        );
    }
}
