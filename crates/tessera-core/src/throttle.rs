//! Throttling of password guessing (RFC 6749 §4.3.2 and §10.10: the server
//! MUST protect the password grant and login against brute force).
//!
//! Failures are counted per (user, client address) and per client address.
//! A user is locked out only at the address the failures came from, so an
//! attacker elsewhere can never lock the real owner out; every lockout ends by
//! itself, and attempts made while locked are not counted, so a lockout cannot
//! extend itself.
//!
//! An "address" here is what [`address_group`] makes of the client's IP
//! address: an IPv4 address whole, an IPv6 address by its /64 prefix.

use std::net::{IpAddr, Ipv6Addr};

/// The throttling settings of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures for one user from one address before a lockout.
    pub user_failures: i64,
    /// Failures from one address, for any users, before a lockout.
    pub address_failures: i64,
    /// Failures older than this many seconds are forgotten.
    pub window: i64,
    /// The first lockout, in seconds; each further failure doubles it.
    pub base_lockout: i64,
    /// No lockout lasts longer than this many seconds.
    pub max_lockout: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            user_failures: 5,
            address_failures: 50,
            window: 900,
            base_lockout: 30,
            max_lockout: 900,
        }
    }
}

impl ThrottlePolicy {
    /// How long to lock out after `failures` counted failures against `limit`,
    /// if at all: `base × 2^(failures − limit)`, capped at `max_lockout`.
    pub fn lockout(&self, failures: i64, limit: i64) -> Option<i64> {
        if failures < limit {
            return None;
        }
        let doublings = u32::try_from((failures - limit).min(20)).unwrap_or(20);
        Some(
            self.base_lockout
                .saturating_mul(1_i64 << doublings)
                .min(self.max_lockout),
        )
    }
}

/// The name under which failures from `address` are counted.
///
/// An IPv4 address counts alone. An IPv6 address counts by its /64 prefix:
/// RFC 4291 §2.5.4 leaves the low 64 bits of a unicast address to the host
/// (RFC 8981 even has it change them), so one client holds a whole /64 and
/// could otherwise rotate through it to escape the limits. An IPv4-mapped
/// IPv6 address (RFC 4291 §2.5.5.2), as a dual-stack socket reports an IPv4
/// peer, counts as that IPv4 address.
pub fn address_group(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX));
                format!("{prefix}/64")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(text: &str) -> String {
        address_group(text.parse().unwrap())
    }

    #[test]
    fn ipv4_counts_alone() {
        assert_eq!(group("203.0.113.7"), "203.0.113.7");
        assert_ne!(group("203.0.113.7"), group("203.0.113.8"));
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix() {
        assert_eq!(
            group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            group("2001:db8:1:2::1"),
            group("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("::1"), "::/64");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        assert_eq!(group("::ffff:203.0.113.7"), "203.0.113.7");
        assert_ne!(group("::ffff:203.0.113.7"), group("::ffff:203.0.113.8"));
    }

    #[test]
    fn lockouts_grow_and_are_capped() {
        let policy = ThrottlePolicy::default();
        assert_eq!(policy.lockout(4, 5), None);
        assert_eq!(policy.lockout(5, 5), Some(30));
        assert_eq!(policy.lockout(6, 5), Some(60));
        assert_eq!(policy.lockout(10, 5), Some(900));
        assert_eq!(policy.lockout(1_000_000, 5), Some(900));
    }
}
