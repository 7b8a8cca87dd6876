//! Instants as whole seconds since the Unix epoch, the unit of JWT `exp`/`iat`.

use serde::{Deserialize, Serialize};

/// A point in time, in seconds since 1970-01-01T00:00:00Z.
///
/// The clock is read once per request at the edge and passed down as this value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn plus_seconds(self, seconds: i64) -> UnixTime {
        UnixTime(self.0.saturating_add(seconds))
    }

    /// True when `self` is at or past `deadline`.
    pub fn is_at_or_after(self, deadline: UnixTime) -> bool {
        self.0 >= deadline.0
    }
}
