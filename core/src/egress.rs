//! Where the server may send on someone else's say-so (spec/security.md, "SSRF"): the
//! address ranges that are the inside of a network — loopback, private, link-local (where
//! cloud metadata services answer), carrier-grade NAT, unique-local — and an allow-list of
//! ranges that are fine all the same. Pure: the HTTP clients that resolve names apply it.

use std::net::IpAddr;

/// Why an address is one of the inside's, or `None` for a public one.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata services answer there)")
            } else if v4.is_private() {
                Some("private")
            } else if a == 100 && (64..128).contains(&b) {
                Some("carrier-grade NAT")
            } else if v4.is_unspecified() || v4.is_broadcast() || a == 0 {
                Some("unspecified")
            } else if a >= 224 {
                Some("multicast or reserved")
            } else if (a, b, c) == (192, 0, 0) || (a == 198 && (b == 18 || b == 19)) {
                Some("special-purpose")
            } else if (a, b, c, d) == (168, 63, 129, 16) {
                Some("cloud metadata (Azure)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            // IPv4 carried in IPv6: mapped, compatible, NAT64 (64:ff9b::/96, 64:ff9b:1::/48)
            // and 6to4 (2002::/16) lead to the IPv4 address they carry.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_range(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                return internal_range(embedded(s[6], s[7]));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..2] == [0x64, 0xff9b] && s[2] == 1 {
                return internal_range(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return internal_range(embedded(s[1], s[2]));
            }
            let first = s[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local (private)")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if first & 0xff00 == 0xff00 {
                Some("multicast")
            } else if first == 0xfd00 && v6.segments()[1..4] == [0xec2, 0, 0] {
                Some("cloud metadata")
            } else {
                None
            }
        }
    }
}

/// An address range, `10.1.0.0/16` or `fd00::/8` (a bare address is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `ADDRESS[/PREFIX]`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address range (`10.0.0.0/8`, `fd00::/8`)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpRange { network, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, len), (addr, addr_len)) = (bits(self.network), bits(ip));
        if len != addr_len {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == addr & mask
    }
}

/// The rule for one kind of outbound request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Refuse addresses in the inside's ranges ([`internal_range`]).
    pub deny_internal: bool,
    /// Ranges allowed all the same.
    pub allow: Vec<IpRange>,
}

impl EgressPolicy {
    /// `Err` with why, when `ip` may not be sent to.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if !self.deny_internal || self.allow.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        match internal_range(ip) {
            Some(why) => Err(format!(
                "{ip} is a {why} address, refused for this destination (serve --egress-allow admits a range)"
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn the_inside_is_recognised() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "168.63.129.16",
            "240.0.0.1",
            "ff02::1",
        ] {
            assert!(internal_range(ip(inside)).is_some(), "{inside}");
        }
        for outside in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(internal_range(ip(outside)).is_none(), "{outside}");
        }
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let r = IpRange::parse("10.1.0.0/16").unwrap_or(IpRange {
            network: ip("0.0.0.0"),
            prefix: 32,
        });
        assert!(r.contains(ip("10.1.200.3")));
        assert!(!r.contains(ip("10.2.0.1")));
        assert!(r.contains(ip("::ffff:10.1.0.9")));
        assert!(IpRange::parse("127.0.0.1").is_ok_and(|r| r.contains(ip("127.0.0.1"))));
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("nonsense").is_err());
    }

    #[test]
    fn a_policy_refuses_the_inside_unless_allowed() {
        let policy = EgressPolicy {
            deny_internal: true,
            allow: IpRange::parse("127.0.0.0/8").into_iter().collect(),
        };
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("169.254.169.254")).is_err());
        assert!(policy.check(ip("93.184.216.34")).is_ok());
        assert!(EgressPolicy::default().check(ip("10.0.0.1")).is_ok());
    }
}
