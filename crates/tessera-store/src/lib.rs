//! Storage for Tessera: the [`Store`] trait the server depends on, and its
//! SQLite and PostgreSQL implementations, chosen by [`connect`] from the URL.
//!
//! Architecture invariant: nothing here decides protocol questions. The store
//! offers atomic primitives (consume a code once, rotate a refresh token once)
//! and the server and `tessera-core` decide what they mean.

mod group_commit;
mod postgres;
mod shared_read;
mod sql;
mod sqlite;
mod sqlite_batch;
mod sqlite_read;
#[cfg(test)]
mod test_records;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tessera_core::branding::{Branding, BrandingSummary};
use tessera_core::grant::Prompt;
use tessera_core::secret::SecretHash;
use tessera_core::{
    AccessTokenRecord, AuthorizationCode, Client, Consent, Lifetimes, PendingAuthorization,
    RefreshTokenRecord, ScopeDefinition, ScopeSet, Session, SigningKeyRecord, Tenant, TenantId,
    TenantName, TenantSettings, TokenError, UnixTime, User,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The most connections one process opens.
    pub max_connections: u32,
    /// How long a request waits for a free connection (or a new one) before
    /// it fails as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens the database `url` names — `sqlite://...` or `postgres://...`
/// (`postgresql://` too) — and applies its migrations.
pub async fn connect(url: &str, pool: &PoolSettings) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, pool).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, pool).await?))
    } else {
        Err(StoreError::Internal(
            "the database URL must start with sqlite:// or postgres://".into(),
        ))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_transient) => {
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Internal(error.to_string()),
        }
    }
}

/// Database error codes that mean "try again later", not "this is wrong".
fn is_transient(code: &str) -> bool {
    // SQLite: SQLITE_BUSY and SQLITE_LOCKED after the busy timeout.
    matches!(code, "5" | "6")
        // PostgreSQL: connection exceptions (08), insufficient resources (53),
        // the server shutting down or the backend terminated (57P01-57P03),
        // serialisation failures and deadlocks (40001, 40P01), a lock not
        // granted within `lock_timeout` (55P03).
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03")
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// Failures of the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (a tenant or username that exists).
    #[error("already exists")]
    Conflict,
    /// A referenced record (such as a tenant) does not exist.
    #[error("not found")]
    NotFound,
    /// The database cannot be reached or is too busy right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the cause is for the logs only.
    #[error("storage failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What replaces a spent refresh token: the next token of its family, and the
/// record of the access token issued beside it.
#[derive(Debug, Clone)]
pub struct Successor {
    pub refresh: RefreshTokenRecord,
    pub access: AccessTokenRecord,
}

/// Decides, from the stored record of a presented refresh token (as it was
/// before this presentation), what replaces it, or refuses it with the error
/// for the client. The store may
/// call it more than once (a batch that is run again); it must not have side
/// effects.
pub type DecideSuccessor =
    Box<dyn Fn(&RefreshTokenRecord) -> Result<Successor, TokenError> + Send + Sync>;

/// The outcome of presenting a refresh token for rotation.
#[derive(Debug)]
pub enum Rotation {
    /// The token was valid and unused; it is now marked used and the
    /// successor stored.
    Rotated(Box<Successor>),
    /// The decision refused the token; nothing was written.
    Refused(TokenError),
    /// The token had already been used or its family revoked: reuse.
    /// The whole family has now been revoked (RFC 9700 §4.14.2).
    Reused,
    /// No refresh token of this tenant has that hash.
    Unknown,
}

/// What the first use of an authorization code issues: the access token's
/// record (kept, so that a replay of the code can revoke it) and, for
/// clients registered for the refresh_token grant, the first refresh token
/// of the code's family.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access: AccessTokenRecord,
    pub refresh: Option<RefreshTokenRecord>,
}

/// Decides, from the stored record of a presented authorization code, what
/// its first use issues, or refuses it with the error for the client (wrong
/// client, verifier or redirect URI; expired). Called only for an unused
/// code; like [`DecideSuccessor`], it may be called more than once and must
/// not have side effects.
pub type DecideIssue = Box<dyn Fn(&AuthorizationCode) -> Result<Issued, TokenError> + Send + Sync>;

/// The outcome of presenting an authorization code.
#[derive(Debug)]
pub enum CodeRedemption {
    /// First use, accepted: the code is now marked used and what it issued
    /// stored, in the same transaction.
    Redeemed(Box<Issued>),
    /// The decision refused the code; nothing was written, so the code is
    /// still there for its rightful client.
    Refused(TokenError),
    /// The code was used before; the family its first use started has now been
    /// revoked (RFC 6749 §4.1.2).
    Replayed,
    Unknown,
}

/// Everything the server keeps. One implementation per database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// Ends the store's background work and closes its connections: the
    /// last call on a store, before the process exits. On SQLite it waits
    /// for a last, complete checkpoint, so that the process leaves an empty
    /// WAL (the next process to open the database would otherwise read it
    /// back in, and copy it into the database again while it serves).
    async fn close(&self);

    /// A counter that moves with every change to tenants, signing keys,
    /// scopes and clients, whoever makes it (database triggers keep it): what
    /// the server's cache of them is checked against.
    async fn config_version(&self) -> StoreResult<i64>;

    /// Deletes what has expired: pending requests, sessions, codes, tokens
    /// and revocation-list entries. Returns how many rows went.
    async fn purge_expired(&self, now: UnixTime) -> StoreResult<u64>;

    /// The deployment-wide secret named `name`, created from `generate` the
    /// first time it is asked for (`generate` is not called otherwise).
    async fn server_secret(
        &self,
        name: &str,
        generate: &(dyn Fn() -> Vec<u8> + Send + Sync),
    ) -> StoreResult<Vec<u8>>;
    /// Sets the deployment-wide secret `name`, replacing any (for `import`).
    async fn replace_server_secret(&self, name: &str, value: &[u8]) -> StoreResult<()>;

    // Tenants and their keys.
    async fn create_tenant(
        &self,
        name: &TenantName,
        lifetimes: Lifetimes,
        first_key: SigningKeyRecord,
        now: UnixTime,
    ) -> StoreResult<Tenant>;
    async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    /// Whether there is any tenant, without reading them all.
    async fn has_tenants(&self) -> StoreResult<bool>;
    /// Stores a tenant's lifetimes and settings, and its branding with its
    /// version when given, in one transaction: all of it or none.
    async fn update_tenant(
        &self,
        tenant: TenantId,
        lifetimes: Lifetimes,
        settings: &TenantSettings,
        branding: Option<(&Branding, i64)>,
    ) -> StoreResult<()>;
    async fn set_tenant_settings(
        &self,
        tenant: TenantId,
        settings: &TenantSettings,
    ) -> StoreResult<()>;
    /// Deletes a tenant and everything in it. Returns false if it did not exist.
    async fn delete_tenant(&self, name: &str) -> StoreResult<bool>;

    /// The tenant's branding (empty when it has none).
    async fn branding(&self, tenant: TenantId) -> StoreResult<Branding>;
    async fn branding_summary(&self, tenant: TenantId) -> StoreResult<Option<BrandingSummary>>;
    async fn put_branding(
        &self,
        tenant: TenantId,
        branding: &Branding,
        version: i64,
    ) -> StoreResult<()>;

    /// Makes `new_key` the tenant's signing key; the previous current key stays
    /// published until `retire_previous_at`.
    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        new_key: SigningKeyRecord,
        retire_previous_at: UnixTime,
    ) -> StoreResult<()>;
    /// Adds a key exactly as given, retirement included (for `import`).
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Keys still published at `now`, newest first; the first one signs.
    async fn published_keys(
        &self,
        tenant: TenantId,
        now: UnixTime,
    ) -> StoreResult<Vec<SigningKeyRecord>>;

    // Scopes.
    /// Creates or updates a scope definition.
    async fn put_scope(&self, tenant: TenantId, scope: &ScopeDefinition) -> StoreResult<()>;
    /// Creates a scope definition with an empty description unless it exists.
    async fn ensure_scope(&self, tenant: TenantId, scope: &tessera_core::Scope) -> StoreResult<()>;
    async fn list_scopes(&self, tenant: TenantId) -> StoreResult<Vec<ScopeDefinition>>;
    async fn delete_scope(&self, tenant: TenantId, name: &str) -> StoreResult<bool>;

    // Clients.
    async fn create_client(&self, client: &Client) -> StoreResult<()>;
    /// Replaces a client's settings (everything but its id and secret).
    async fn update_client(&self, client: &Client) -> StoreResult<()>;
    async fn client(&self, tenant: TenantId, client_id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self, tenant: TenantId) -> StoreResult<Vec<Client>>;
    async fn delete_client(&self, tenant: TenantId, client_id: &str) -> StoreResult<bool>;

    // Users.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_username(&self, tenant: TenantId, username: &str)
    -> StoreResult<Option<User>>;
    async fn user_by_id(&self, tenant: TenantId, id: &str) -> StoreResult<Option<User>>;
    async fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<User>>;
    async fn delete_user(&self, tenant: TenantId, username: &str) -> StoreResult<bool>;

    // The browser side of the authorization endpoint.
    async fn put_pending_authorization(&self, pending: &PendingAuthorization) -> StoreResult<()>;
    async fn pending_authorization(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        now: UnixTime,
    ) -> StoreResult<Option<PendingAuthorization>>;
    /// Removes a pending authorization; true only for the one caller that
    /// removed it, so a double-submitted consent issues one code.
    async fn take_pending_authorization(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
    ) -> StoreResult<bool>;
    /// Replaces the prompt of a pending request (after a login it asked for).
    async fn set_pending_prompt(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        prompt: Prompt,
    ) -> StoreResult<()>;
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn session(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        now: UnixTime,
    ) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, tenant: TenantId, id_hash: &SecretHash) -> StoreResult<()>;

    // Standing consents.
    async fn consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<Consent>>;
    /// Records (or replaces) what `user_id` has allowed `client_id`.
    async fn put_consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
        scope: &ScopeSet,
        now: UnixTime,
    ) -> StoreResult<()>;
    async fn list_consents(&self, tenant: TenantId, user_id: &str) -> StoreResult<Vec<Consent>>;
    /// Removes a consent, deletes the client's unredeemed authorization codes
    /// for the user and revokes every refresh and access token the client
    /// holds for the user, in one transaction. Returns false if there was no
    /// consent.
    async fn revoke_consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;

    // Throttling of password attempts.
    /// Until when `key` is locked out, if it is.
    async fn locked_until(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
    ) -> StoreResult<Option<UnixTime>>;
    /// Counts a failure for `key` (forgetting failures from before
    /// `window_start`) and returns the count in the current window.
    async fn record_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        window_start: UnixTime,
    ) -> StoreResult<i64>;
    async fn lock_out(&self, tenant: TenantId, key: &str, until: UnixTime) -> StoreResult<()>;
    async fn clear_failures(&self, tenant: TenantId, key: &str) -> StoreResult<()>;

    // Codes and tokens.
    async fn put_authorization_code(&self, code: &AuthorizationCode) -> StoreResult<()>;
    /// In one transaction: reads the code `code_hash` of `tenant`; if it is
    /// unused, asks `decide` what it issues, marks it used and stores that;
    /// if it was used before, revokes its family. RFC 6749 §4.1.2: single
    /// use, even under concurrent redemption; and since a replay sees the
    /// code used only once this transaction has committed, it always finds
    /// the tokens to revoke.
    async fn redeem_authorization_code(
        &self,
        tenant: TenantId,
        code_hash: &SecretHash,
        now: UnixTime,
        decide: DecideIssue,
    ) -> StoreResult<CodeRedemption>;
    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> StoreResult<()>;
    async fn refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>>;
    /// In one transaction: reads the refresh token `token_hash` of `tenant`,
    /// asks `decide` for its successor, marks it used and stores the
    /// successor; or, when the token was already used or revoked and
    /// `decide` accepts it all the same, stores nothing and revokes the
    /// family. Deciding inside the write spares a separate read, and no
    /// other rotation of the token can come between.
    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
        now: UnixTime,
        decide: DecideSuccessor,
    ) -> StoreResult<Rotation>;
    /// Stores the records of a newly issued grant in one transaction.
    async fn put_tokens(
        &self,
        access: Option<&AccessTokenRecord>,
        refresh: Option<&RefreshTokenRecord>,
    ) -> StoreResult<()>;
    /// Stores an access token record (opaque token, or JWT of a family).
    async fn put_access_token(&self, token: &AccessTokenRecord) -> StoreResult<()>;
    async fn access_token_by_hash(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>>;
    async fn access_token_by_jti(
        &self,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>>;
    /// Marks an access token revoked, recording it first if it was not stored
    /// (a JWT): the revocation list of RFC 7009 for self-contained tokens.
    async fn revoke_access_token(
        &self,
        token: &AccessTokenRecord,
        now: UnixTime,
    ) -> StoreResult<()>;
    /// Revokes every refresh and access token of a grant family.
    async fn revoke_family(
        &self,
        tenant: TenantId,
        family_id: &str,
        now: UnixTime,
    ) -> StoreResult<()>;
}
