//! The writes both backends group into shared transactions (group commit):
//! SQLite's batch thread (`sqlite_batch.rs`) and PostgreSQL's write batch
//! (`postgres/batch.rs`). The `Store` methods of `sql.rs` hand them over as
//! [`Work`] and get [`Done`] back.

use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord, TenantId, TokenError, UnixTime};

use crate::{CodeRedemption, DecideIssue, DecideSuccessor, Rotation, StoreError, StoreResult};

/// A write done in a batch.
// Each job is moved once, into the queue; boxing the records would cost an
// allocation per issued token instead.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    /// The records of a newly issued grant.
    Tokens {
        access: Option<AccessTokenRecord>,
        refresh: Option<RefreshTokenRecord>,
    },
    /// See [`crate::Store::rotate_refresh_token`].
    Rotate {
        tenant: TenantId,
        token_hash: SecretHash,
        now: UnixTime,
        decide: DecideSuccessor,
    },
    /// See [`crate::Store::redeem_authorization_code`].
    Redeem {
        tenant: TenantId,
        code_hash: SecretHash,
        now: UnixTime,
        decide: DecideIssue,
    },
}

/// What a write came to.
pub(crate) enum Done {
    Stored,
    Rotation(Rotation),
    Redemption(CodeRedemption),
}

/// Runs a decision of the server's. A panic in it would end the batch's
/// thread or task, and with it every write of the batch: it fails its own
/// job instead.
pub(crate) fn guarded<T>(
    decide: impl FnOnce() -> Result<T, TokenError>,
) -> StoreResult<Result<T, TokenError>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decide))
        .map_err(|_| StoreError::Internal("a token decision panicked".into()))
}
