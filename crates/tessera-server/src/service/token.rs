//! The token endpoint's grants (RFC 6749 §4.1.3, §4.4, §6) and token issuance
//! (RFC 9068 JWTs, opaque tokens, rotating refresh tokens).

use std::sync::Arc;

use serde::Serialize;
use tessera_core::grant::{
    CODE_INVALID, REFRESH_TOKEN_INVALID, check_code_redemption, check_refresh, requested_scope,
};
use tessera_core::jwt::{AccessTokenClaims, Audience, SigningKey};
use tessera_core::secret::{BearerSecret, Purpose, SecretHash};
use tessera_core::{
    AccessTokenRecord, Client, ClientId, GrantType, RefreshTokenRecord, ScopeSet, Tenant, TenantId,
    TokenError, TokenFormat, UnixTime,
};
use tessera_store::{CodeRedemption, DecideIssue, DecideSuccessor, Issued, Rotation, Successor};

use super::credentials::{Verdict, check_password};
use super::{ServiceError, new_ordered_id, new_refresh_secret, new_secret};
use crate::AppState;

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Always sent when not empty: RFC 6749 §5.1 requires it when the granted
    /// scope differs from the requested one, and it costs nothing to be
    /// explicit otherwise. An empty scope is no scope-token at all (§3.3).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Whom a token is about.
#[derive(Debug, Clone)]
pub enum Subject {
    User {
        id: String,
        auth_time: UnixTime,
    },
    /// The client acting on its own behalf (client_credentials).
    Client,
}

/// The parameters of a token request that grants read. Its `Debug` shows
/// which are present, never their values.
#[derive(Default)]
pub struct TokenParams<'a> {
    pub grant_type: Option<&'a str>,
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub refresh_token: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Where the request came from, for throttling the password grant.
    pub client_address: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for TokenParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |value: Option<&str>| value.map(|_| "[present]");
        f.debug_struct("TokenParams")
            .field("grant_type", &self.grant_type)
            .field("code", &present(self.code))
            .field("redirect_uri", &self.redirect_uri)
            .field("code_verifier", &present(self.code_verifier))
            .field("refresh_token", &present(self.refresh_token))
            .field("scope", &self.scope)
            .field("username", &self.username)
            .field("password", &present(self.password))
            .field("client_address", &self.client_address)
            .finish()
    }
}

/// Runs the grant named by `grant_type` for an authenticated client.
pub async fn exchange(
    state: &AppState,
    tenant: &Tenant,
    client: &Arc<Client>,
    params: &TokenParams<'_>,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    let grant = match params.grant_type {
        None => return Err(TokenError::InvalidRequest("grant_type is required")),
        Some(text) => text
            .parse::<GrantType>()
            .map_err(|_| TokenError::UnsupportedGrantType)?,
    };
    match grant {
        GrantType::AuthorizationCode => {
            authorization_code(state, tenant, client, params, now).await
        }
        GrantType::ClientCredentials => {
            client_credentials(state, tenant, client, params, now).await
        }
        GrantType::RefreshToken => refresh(state, tenant, client, params, now).await,
        GrantType::Password => password(state, tenant, client, params, now).await,
        // RFC 6749 §4.2: the implicit grant has no token request.
        GrantType::Implicit => Err(TokenError::UnsupportedGrantType),
    }
}

async fn authorization_code(
    state: &AppState,
    tenant: &Tenant,
    client: &Arc<Client>,
    params: &TokenParams<'_>,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(TokenError::UnauthorizedClient(
            "this client is not registered for the authorization_code grant",
        ));
    }
    let code = params
        .code
        .ok_or(TokenError::InvalidRequest("code is required"))?;
    // Redemption takes the database's write lock: a value that cannot be a
    // code of ours is refused before it gets there.
    if !BearerSecret::has_issued_shape(code) {
        return Err(TokenError::InvalidGrant(CODE_INVALID));
    }
    let code_hash = state.hasher.hash(Purpose::AuthorizationCode, code);
    // As in `refresh`: everything that does not depend on the stored code is
    // settled first, and the store checks the code, marks it used and stores
    // the tokens in one transaction, so that a replay always finds them to
    // revoke. Only the signature comes after.
    let encoding = access_encoding(state, tenant, client, now).await?;
    let template = access_template(state, tenant, client, &encoding, now);
    let refresh = client
        .allows_grant(GrantType::RefreshToken)
        .then(|| RefreshPlan::new(state, tenant, client, now));
    let decide: DecideIssue = {
        let client = client.clone();
        let redirect_uri = params.redirect_uri.map(str::to_owned);
        let code_verifier = params.code_verifier.map(str::to_owned);
        let refresh = refresh.as_ref().map(|(_, plan)| plan.clone());
        Box::new(move |code| {
            check_code_redemption(
                code,
                &client,
                redirect_uri.as_deref(),
                code_verifier.as_deref(),
                now,
            )?;
            let subject = Subject::User {
                id: code.user_id.clone(),
                auth_time: code.auth_time,
            };
            Ok(Issued {
                access: access_record(&template, &subject, &code.scope, Some(&code.family_id)),
                refresh: refresh
                    .as_ref()
                    .map(|plan| plan.record(&code.family_id, &subject, &code.scope)),
            })
        })
    };
    let issued = match state
        .store
        .redeem_authorization_code(tenant.id, &code_hash, now, decide)
        .await
        .map_err(ServiceError::from)?
    {
        CodeRedemption::Redeemed(issued) => issued,
        CodeRedemption::Refused(error) => {
            // RFC 9700 §4.5: a code presented by the wrong client, or
            // without its verifier, may have leaked.
            tracing::warn!(client_id = %client.client_id, %error, "authorization code refused");
            return Err(error);
        }
        CodeRedemption::Replayed => {
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; its tokens were revoked");
            return Err(TokenError::InvalidGrant(CODE_INVALID));
        }
        CodeRedemption::Unknown => {
            return Err(TokenError::InvalidGrant(CODE_INVALID));
        }
    };
    let access_token = encode_access_token(state, tenant, encoding, &issued.access)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: client.lifetimes(tenant.lifetimes).access_token,
        refresh_token: refresh.map(|(secret, _)| secret.expose().to_owned()),
        scope: issued.access.scope.to_string(),
    })
}

/// RFC 6749 §4.3: resource owner password credentials, for clients registered
/// for it only (RFC 9700 §2.4: it MUST NOT be used otherwise).
async fn password(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams<'_>,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    if !client.allows_grant(GrantType::Password) {
        return Err(TokenError::UnauthorizedClient(
            "this client is not registered for the password grant",
        ));
    }
    let (Some(username), Some(password_text)) = (params.username, params.password) else {
        return Err(TokenError::InvalidRequest(
            "username and password are required",
        ));
    };
    let scope = requested_scope(params.scope, client)?;
    let verdict = check_password(
        state,
        tenant,
        username,
        password_text,
        params.client_address,
        now,
    )
    .await?;
    let user = match verdict {
        Verdict::Verified(user) => user,
        // RFC 6749 §5.2: invalid resource owner credentials are invalid_grant;
        // unknown users and wrong passwords are not told apart.
        Verdict::Rejected => {
            return Err(TokenError::InvalidGrant(
                "the username or password is incorrect",
            ));
        }
        Verdict::Throttled => {
            return Err(TokenError::InvalidGrant(
                "too many failed attempts; try again later",
            ));
        }
    };
    let subject = Subject::User {
        id: user.id,
        auth_time: now,
    };
    issue(state, tenant, client, &subject, &scope, now).await
}

async fn client_credentials(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    params: &TokenParams<'_>,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    // RFC 6749 §4.4: only confidential clients.
    if client.is_public() || !client.allows_grant(GrantType::ClientCredentials) {
        return Err(TokenError::UnauthorizedClient(
            "this client is not registered for the client_credentials grant",
        ));
    }
    let scope = requested_scope(params.scope, client)?;
    // RFC 6749 §4.4.3: a refresh token SHOULD NOT be included.
    let access =
        issue_access_token(state, tenant, client, &Subject::Client, &scope, None, now).await?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: client.lifetimes(tenant.lifetimes).access_token,
        refresh_token: None,
        scope: scope.to_string(),
    })
}

async fn refresh(
    state: &AppState,
    tenant: &Tenant,
    client: &Arc<Client>,
    params: &TokenParams<'_>,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    let presented = params
        .refresh_token
        .ok_or(TokenError::InvalidRequest("refresh_token is required"))?;
    // Rotation takes the database's write lock: a value that cannot be a
    // refresh token of ours is refused before it gets there.
    if !BearerSecret::has_issued_shape(presented) {
        return Err(TokenError::InvalidGrant(REFRESH_TOKEN_INVALID));
    }
    let token_hash = state.hasher.ordered_key(Purpose::RefreshToken, presented);
    // Everything the successor needs that does not depend on the stored token
    // is settled here, the signing key included, so that only the signature
    // (which fails only if aws-lc's random generator does) can fail
    // between spending the old token and answering with the new one. The
    // store reads the token, lets `decide` judge it and writes the rotation in
    // one transaction.
    let encoding = access_encoding(state, tenant, client, now).await?;
    let template = access_template(state, tenant, client, &encoding, now);
    let next_secret = new_refresh_secret();
    let next_hash = state
        .hasher
        .ordered_key(Purpose::RefreshToken, next_secret.expose());
    let decide: DecideSuccessor = {
        let client = client.clone();
        let requested_scope = params.scope.map(str::to_owned);
        Box::new(move |stored| {
            let access_scope = check_refresh(stored, &client, requested_scope.as_deref(), now)?;
            let subject = match (&stored.user_id, stored.auth_time) {
                (Some(id), Some(auth_time)) => Subject::User {
                    id: id.clone(),
                    auth_time,
                },
                _ => Subject::Client,
            };
            Ok(Successor {
                // RFC 6749 §6: the new refresh token keeps the original scope.
                refresh: RefreshTokenRecord {
                    token_hash: next_hash.clone(),
                    family_id: stored.family_id.clone(),
                    tenant_id: stored.tenant_id,
                    client_id: client.client_id.clone(),
                    user_id: stored.user_id.clone(),
                    scope: stored.scope.clone(),
                    auth_time: stored.auth_time,
                    issued_at: now,
                    // The family's lifetime is absolute: rotation does not extend it.
                    expires_at: stored.expires_at,
                    spent: false,
                },
                access: access_record(&template, &subject, &access_scope, Some(&stored.family_id)),
            })
        })
    };
    // RFC 9700 §4.14.2: rotation; reuse of a rotated token revokes the family.
    let successor = match state
        .store
        .rotate_refresh_token(tenant.id, &token_hash, now, decide)
        .await
        .map_err(ServiceError::from)?
    {
        Rotation::Rotated(successor) => successor,
        Rotation::Refused(error) => return Err(error),
        Rotation::Reused => {
            tracing::warn!(client_id = %client.client_id, "refresh token reused; its family was revoked");
            return Err(TokenError::InvalidGrant(REFRESH_TOKEN_INVALID));
        }
        Rotation::Unknown => {
            return Err(TokenError::InvalidGrant(REFRESH_TOKEN_INVALID));
        }
    };
    let access_token = encode_access_token(state, tenant, encoding, &successor.access)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: client.lifetimes(tenant.lifetimes).access_token,
        refresh_token: Some(next_secret.expose().to_owned()),
        scope: successor.access.scope.to_string(),
    })
}

/// Issues an access token and, for clients registered for the refresh_token
/// grant, the first refresh token of a new family.
async fn issue(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &Subject,
    scope: &ScopeSet,
    now: UnixTime,
) -> Result<TokenResponse, TokenError> {
    let family_id = new_ordered_id();
    let access =
        mint_access_token(state, tenant, client, subject, scope, Some(&family_id), now).await?;
    let refresh = client.allows_grant(GrantType::RefreshToken).then(|| {
        let (secret, plan) = RefreshPlan::new(state, tenant, client, now);
        (secret, plan.record(&family_id, subject, scope))
    });
    // Both records in one transaction: one write instead of two.
    state
        .store
        .put_tokens(access.record.as_ref(), refresh.as_ref().map(|(_, r)| r))
        .await
        .map_err(ServiceError::from)?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: client.lifetimes(tenant.lifetimes).access_token,
        refresh_token: refresh.map(|(secret, _)| secret.expose().to_owned()),
        scope: scope.to_string(),
    })
}

/// The first refresh token of a family, drawn before the grant is decided:
/// what it says whatever the grant turns out to be. [`RefreshPlan::record`]
/// completes it.
#[derive(Clone)]
struct RefreshPlan {
    token_hash: SecretHash,
    tenant_id: TenantId,
    client_id: ClientId,
    issued_at: UnixTime,
    expires_at: UnixTime,
}

impl RefreshPlan {
    /// A new refresh token for `client`, and the plan of its record.
    fn new(
        state: &AppState,
        tenant: &Tenant,
        client: &Client,
        now: UnixTime,
    ) -> (BearerSecret, Self) {
        let secret = new_refresh_secret();
        let plan = RefreshPlan {
            token_hash: state
                .hasher
                .ordered_key(Purpose::RefreshToken, secret.expose()),
            tenant_id: tenant.id,
            client_id: client.client_id.clone(),
            issued_at: now,
            expires_at: now.plus_seconds(client.lifetimes(tenant.lifetimes).refresh_token),
        };
        (secret, plan)
    }

    fn record(&self, family_id: &str, subject: &Subject, scope: &ScopeSet) -> RefreshTokenRecord {
        let (user_id, auth_time) = match subject {
            Subject::User { id, auth_time } => (Some(id.clone()), Some(*auth_time)),
            Subject::Client => (None, None),
        };
        RefreshTokenRecord {
            token_hash: self.token_hash.clone(),
            family_id: family_id.to_owned(),
            tenant_id: self.tenant_id,
            client_id: self.client_id.clone(),
            user_id,
            scope: scope.clone(),
            auth_time,
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            spent: false,
        }
    }
}

/// The `aud` of a client's access tokens: its registered audiences, or, when it
/// has none, the tenant's issuer (documented in the README).
fn audiences(state: &AppState, tenant: &Tenant, client: &Client) -> Vec<String> {
    if client.audiences.is_empty() {
        vec![state.issuer(&tenant.name)]
    } else {
        client.audiences.clone()
    }
}

/// Issues one access token in the client's format, and stores its record
/// when it has one.
pub async fn issue_access_token(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &Subject,
    scope: &ScopeSet,
    family_id: Option<&str>,
    now: UnixTime,
) -> Result<String, TokenError> {
    let minted = mint_access_token(state, tenant, client, subject, scope, family_id, now).await?;
    if let Some(record) = &minted.record {
        state
            .store
            .put_access_token(record)
            .await
            .map_err(ServiceError::from)?;
    }
    Ok(minted.token)
}

/// An access token and the record the store must keep of it, if any.
struct MintedAccess {
    token: String,
    record: Option<AccessTokenRecord>,
}

/// Makes an access token in the client's format without storing anything, so
/// that the caller can store its record in the same transaction as the rest
/// of the grant.
async fn mint_access_token(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    subject: &Subject,
    scope: &ScopeSet,
    family_id: Option<&str>,
    now: UnixTime,
) -> Result<MintedAccess, TokenError> {
    let encoding = access_encoding(state, tenant, client, now).await?;
    let template = access_template(state, tenant, client, &encoding, now);
    let record = access_record(&template, subject, scope, family_id);
    let token = encode_access_token(state, tenant, encoding, &record)?;
    // Every opaque token is recorded; a JWT only when it belongs to a grant
    // family, by jti, so that revoking the family (or replaying its code)
    // reaches it through introspection.
    let kept = record.token_hash.is_some() || record.family_id.is_some();
    Ok(MintedAccess {
        token,
        record: kept.then_some(record),
    })
}

/// How an access token will be encoded, settled before anything is stored:
/// the signing key loaded, or the opaque secret drawn.
enum AccessEncoding {
    Jwt(Arc<SigningKey>),
    Opaque(BearerSecret),
}

async fn access_encoding(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    now: UnixTime,
) -> Result<AccessEncoding, TokenError> {
    Ok(match client.token_format {
        TokenFormat::Jwt => AccessEncoding::Jwt(current_signing_key(state, tenant, now).await?),
        TokenFormat::Opaque => AccessEncoding::Opaque(new_secret()),
    })
}

/// What an access token of `client` issued now says whoever it is about: a
/// new `jti`, the audiences, the times and, for an opaque token, its hash.
/// [`access_record`] completes it.
fn access_template(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    encoding: &AccessEncoding,
    now: UnixTime,
) -> AccessTokenRecord {
    AccessTokenRecord {
        token_hash: match encoding {
            AccessEncoding::Jwt(_) => None,
            AccessEncoding::Opaque(secret) => {
                Some(state.hasher.hash(Purpose::AccessToken, secret.expose()))
            }
        },
        jti: new_ordered_id(),
        tenant_id: tenant.id,
        client_id: client.client_id.clone(),
        user_id: None,
        scope: ScopeSet::default(),
        audiences: audiences(state, tenant, client),
        auth_time: None,
        issued_at: now,
        expires_at: now.plus_seconds(client.lifetimes(tenant.lifetimes).access_token),
        family_id: None,
        revoked: false,
    }
}

/// The record of an access token about `subject` with `scope`.
fn access_record(
    template: &AccessTokenRecord,
    subject: &Subject,
    scope: &ScopeSet,
    family_id: Option<&str>,
) -> AccessTokenRecord {
    let (user_id, auth_time) = match subject {
        Subject::User { id, auth_time } => (Some(id.clone()), Some(*auth_time)),
        Subject::Client => (None, None),
    };
    AccessTokenRecord {
        user_id,
        auth_time,
        scope: scope.clone(),
        family_id: family_id.map(str::to_owned),
        ..template.clone()
    }
}

/// The access token the client receives for `record`: an RFC 9068 JWT
/// signed with the key loaded beforehand, or the opaque secret drawn then.
fn encode_access_token(
    state: &AppState,
    tenant: &Tenant,
    encoding: AccessEncoding,
    record: &AccessTokenRecord,
) -> Result<String, TokenError> {
    match encoding {
        AccessEncoding::Opaque(secret) => Ok(secret.expose().to_owned()),
        AccessEncoding::Jwt(key) => {
            let issuer = state.issuer(&tenant.name);
            let scope = record.scope.to_string();
            let claims = AccessTokenClaims {
                iss: &issuer,
                sub: record
                    .user_id
                    .as_deref()
                    .unwrap_or(record.client_id.as_str()),
                aud: Audience::of(&record.audiences),
                exp: record.expires_at,
                iat: record.issued_at,
                jti: &record.jti,
                client_id: record.client_id.as_str(),
                scope: &scope,
                auth_time: record.auth_time,
            };
            Ok(key.sign(&claims).map_err(ServiceError::from)?)
        }
    }
}

/// The tenant's current signing key, parsed once per kid.
pub(crate) async fn current_signing_key(
    state: &AppState,
    tenant: &Tenant,
    now: UnixTime,
) -> Result<Arc<SigningKey>, ServiceError> {
    let keys = state.published_keys(tenant.id, now).await?;
    let current = keys.first().ok_or_else(|| {
        ServiceError::Internal(format!("tenant '{}' has no signing key", tenant.name))
    })?;
    if let Some(key) = state.cached_signing_key(&current.kid) {
        return Ok(key);
    }
    let key = Arc::new(SigningKey::from_pkcs8(
        &current.kid,
        &current.private_pkcs8,
    )?);
    state.cache_signing_key(key.clone());
    Ok(key)
}
