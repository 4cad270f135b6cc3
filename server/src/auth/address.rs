//! What the per-address limits count a client by: its [`AddressKey`].
//!
//! An IPv4 address is one key. An IPv6 client is keyed by its network, the
//! first `ipv6_prefix_len` bits (`[login_throttle] ipv6_prefix_len`,
//! default 64): one end site gets a whole /64 or more, so keying by the full
//! address would hand an attacker a fresh failed-login bucket and a fresh
//! set of connection slots for every address it picks from its own subnet.
//! An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, how a dual-stack
//! listener sees an IPv4 client) is keyed as the IPv4 address it is, never
//! by the /64 it sits in, which would put every IPv4 client in one key.
//!
//! Both the failed-login throttle and the connection limits (`net/`) use
//! these keys, so one prefix length holds for both.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A client address reduced to what the per-address limits count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// The address with every bit past the prefix cleared.
    network: IpAddr,
    /// 32 for IPv4; `ipv6_prefix_len` for IPv6.
    prefix_len: u8,
}

impl AddressKey {
    /// The key of `address` when IPv6 clients are keyed by their first
    /// `ipv6_prefix_len` bits (clamped to 128; the config bounds it).
    pub fn new(address: IpAddr, ipv6_prefix_len: u8) -> AddressKey {
        match address.to_canonical() {
            IpAddr::V4(v4) => AddressKey { network: IpAddr::V4(v4), prefix_len: 32 },
            IpAddr::V6(v6) => {
                let prefix_len = ipv6_prefix_len.min(128);
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix_len)).unwrap_or(0);
                let network = Ipv6Addr::from(u128::from(v6) & mask);
                AddressKey { network: IpAddr::V6(network), prefix_len }
            }
        }
    }

    /// The key mixed with `seed` by one multiplication: cheap enough for
    /// every token login, which picks its throttle map by it, and spread
    /// over the high bits, which do the picking. Not keyed against chosen
    /// collisions: a collision only shares a map, whose own table hashes
    /// its keys with SipHash.
    pub fn mixed(&self, seed: u64) -> u64 {
        let bits = match self.network {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        // `as` keeps the low 64 bits, on purpose: the high ones are folded in.
        let folded = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(32) ^ u64::from(self.prefix_len);
        (folded ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl fmt::Display for AddressKey {
    /// `203.0.113.7`, `2001:db8:1:2::/64`, or a bare IPv6 address at /128.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.network {
            IpAddr::V6(network) if self.prefix_len < 128 => write!(f, "{network}/{}", self.prefix_len),
            network => write!(f, "{network}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(text: &str, ipv6_prefix_len: u8) -> AddressKey {
        AddressKey::new(text.parse().unwrap(), ipv6_prefix_len)
    }

    #[test]
    fn addresses_of_one_ipv6_prefix_share_a_key() {
        let a = key("2001:db8:1:2::a", 64);
        assert_eq!(a, key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64));
        assert_eq!(a, key("2001:db8:1:2:1234::", 64));
        assert_ne!(a, key("2001:db8:1:3::a", 64));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        // A shorter prefix groups more: a /48 holds 65,536 /64s.
        assert_eq!(key("2001:db8:1:2::a", 48), key("2001:db8:1:ffff::b", 48));
        assert_ne!(key("2001:db8:1:2::a", 48), key("2001:db8:2:2::a", 48));
    }

    #[test]
    fn prefix_128_keys_every_ipv6_address_alone() {
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 128), key("2001:db8::1", 128));
        assert_eq!(key("2001:db8::1", 128).to_string(), "2001:db8::1");
        // The bit just past a /127 decides nothing.
        assert_eq!(key("2001:db8::2", 127), key("2001:db8::3", 127));
        // Out of range clamps rather than panics (the config refuses it).
        assert_eq!(key("2001:db8::1", 200), key("2001:db8::1", 128));
    }

    #[test]
    fn ipv4_is_keyed_by_the_whole_address_whatever_the_ipv6_prefix() {
        assert_ne!(key("192.0.2.1", 64), key("192.0.2.2", 64));
        assert_ne!(key("192.0.2.1", 32), key("192.0.2.2", 32));
        assert_eq!(key("192.0.2.1", 64).to_string(), "192.0.2.1");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        // Every IPv4 client of a dual-stack listener sits in ::ffff:0:0/96,
        // so masking it to a /64 would put them all in one key.
        assert_eq!(key("::ffff:192.0.2.1", 64), key("192.0.2.1", 64));
        assert_ne!(key("::ffff:192.0.2.1", 64), key("::ffff:192.0.2.2", 64));
        assert_eq!(key("::ffff:192.0.2.1", 64).to_string(), "192.0.2.1");
        // The deprecated IPv4-compatible form (::a.b.c.d) is plain IPv6.
        assert_eq!(key("::192.0.2.1", 64), key("::1", 64));
    }

    #[test]
    fn the_zero_prefix_would_key_all_ipv6_together() {
        // Not a value the config allows; the mask arithmetic still holds.
        assert_eq!(key("2001:db8::1", 0), key("fe80::1", 0));
        assert_eq!(key("2001:db8::1", 0).to_string(), "::/0");
    }

    /// How many of `keys` land in each of 16 maps by the mix's top 4 bits.
    fn spread(keys: impl Iterator<Item = AddressKey>, seed: u64) -> [usize; 16] {
        let mut maps = [0; 16];
        for key in keys {
            maps[(key.mixed(seed) >> 60) as usize] += 1;
        }
        maps
    }

    #[test]
    fn the_mix_spreads_neighbouring_addresses_over_every_map() {
        // Clients of one service often sit in one subnet, a load balancer's
        // in a handful of addresses: the high bits must tell them apart.
        for seed in [0, 1, 0x5eed, u64::MAX] {
            let v4 =
                spread((0..1600u32).map(|n| key(&Ipv4Addr::from(0xC000_0200 + n).to_string(), 64)), seed);
            let v6 = spread(
                (0..1600u128).map(|n| {
                    key(&Ipv6Addr::from(0x2001_0db8_0000_0000_u128 << 64 | n << 64).to_string(), 64)
                }),
                seed,
            );
            for maps in [v4, v6] {
                assert!(maps.iter().all(|&count| (50..=150).contains(&count)), "seed {seed}: {maps:?}");
            }
        }
        // The seed moves a key: another server puts it elsewhere.
        let one = key("192.0.2.7", 64);
        assert_ne!(one.mixed(1), one.mixed(2));
    }
}
