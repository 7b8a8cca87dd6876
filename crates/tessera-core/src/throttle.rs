//! Throttling of password guessing (RFC 6749 §4.3.2 and §10.10: the server
//! MUST protect the password grant and login against brute force).
//!
//! Failures are counted per (user, client address) and per client address.
//! A user is locked out only at the address the failures came from, so an
//! attacker elsewhere can never lock the real owner out; every lockout ends by
//! itself, and attempts made while locked are not counted, so a lockout cannot
//! extend itself.

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

#[cfg(test)]
mod tests {
    use super::*;

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
