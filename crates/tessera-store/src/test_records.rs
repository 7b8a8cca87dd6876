//! Token records for the store's unit tests, on both backends.

use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, ClientId, RefreshTokenRecord, ScopeSet, TenantId, UnixTime};

/// A JWT's record, of tenant 1, in `family`.
pub(crate) fn access(jti: &str, family: &str, client: &str) -> AccessTokenRecord {
    AccessTokenRecord {
        token_hash: None,
        jti: jti.into(),
        tenant_id: TenantId(1),
        client_id: ClientId::new(client),
        user_id: None,
        scope: ScopeSet::parse("read").unwrap(),
        audiences: vec!["api".into()],
        auth_time: None,
        issued_at: UnixTime(1),
        expires_at: UnixTime(1_000),
        family_id: Some(family.into()),
        revoked: false,
    }
}

/// A refresh token with hash `[n; 32]`, of tenant 1, in `family`.
pub(crate) fn refresh(n: u8, family: &str, client: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: SecretHash(vec![n; 32]),
        family_id: family.into(),
        tenant_id: TenantId(1),
        client_id: ClientId::new(client),
        user_id: None,
        scope: ScopeSet::parse("read").unwrap(),
        auth_time: None,
        issued_at: UnixTime(1),
        expires_at: UnixTime(1_000),
        spent: false,
    }
}
