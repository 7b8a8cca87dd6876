//! What Tessera knows about a presented token: revocation (RFC 7009) and
//! introspection (RFC 7662, with RFC 9701 JWT responses).

use serde::Serialize;
use serde_json::{Value, json};
use tessera_core::secret::Purpose;
use tessera_core::{
    AccessTokenRecord, Client, ClientId, RefreshTokenRecord, ScopeSet, Tenant, TokenError, UnixTime,
};

use super::ServiceError;
use super::token::current_signing_key;
use crate::AppState;

/// A token found in this tenant.
#[derive(Debug)]
enum Found {
    Refresh(RefreshTokenRecord),
    /// An access token, opaque or JWT; `record.revoked` tells its state.
    Access(AccessTokenRecord),
}

impl Found {
    fn client_id(&self) -> &ClientId {
        match self {
            Found::Refresh(r) => &r.client_id,
            Found::Access(a) => &a.client_id,
        }
    }
}

/// Which kind of token the client says it is (RFC 7009 §2.1, RFC 7662 §2.1).
/// Only a hint: when the token is not found as that kind, every kind is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeHint {
    AccessToken,
    RefreshToken,
    None,
}

impl TypeHint {
    pub fn parse(hint: Option<&str>) -> Self {
        match hint {
            Some("access_token") => TypeHint::AccessToken,
            Some("refresh_token") => TypeHint::RefreshToken,
            _ => TypeHint::None,
        }
    }
}

async fn find(
    state: &AppState,
    tenant: &Tenant,
    token: &str,
    hint: TypeHint,
    now: UnixTime,
) -> Result<Option<Found>, ServiceError> {
    if hint == TypeHint::RefreshToken {
        if let Some(found) = find_refresh(state, tenant, token).await? {
            return Ok(Some(found));
        }
        return find_access(state, tenant, token, now).await;
    }
    if let Some(found) = find_access(state, tenant, token, now).await? {
        return Ok(Some(found));
    }
    find_refresh(state, tenant, token).await
}

async fn find_refresh(
    state: &AppState,
    tenant: &Tenant,
    token: &str,
) -> Result<Option<Found>, ServiceError> {
    let hash = state.hasher.ordered_key(Purpose::RefreshToken, token);
    Ok(state
        .store
        .refresh_token(tenant.id, &hash)
        .await?
        .map(Found::Refresh))
}

async fn find_access(
    state: &AppState,
    tenant: &Tenant,
    token: &str,
    now: UnixTime,
) -> Result<Option<Found>, ServiceError> {
    // A JWT has two dots; opaque tokens are base64url and have none.
    if token.matches('.').count() != 2 {
        let hash = state.hasher.hash(Purpose::AccessToken, token);
        return Ok(state
            .store
            .access_token_by_hash(tenant.id, &hash)
            .await?
            .map(Found::Access));
    }
    let keys = state.published_keys(tenant.id, now).await?;
    let Some(claims) = state.verify_access_token(tenant.id, token, &keys) else {
        return Ok(None);
    };
    if claims.iss != state.issuer(&tenant.name) {
        return Ok(None);
    }
    if let Some(stored) = state
        .store
        .access_token_by_jti(tenant.id, &claims.jti)
        .await?
    {
        return Ok(Some(Found::Access(stored)));
    }
    // A user token carries auth_time; a client's own token has sub = client_id.
    let user_id = claims.auth_time.map(|_| claims.sub.clone());
    Ok(Some(Found::Access(AccessTokenRecord {
        token_hash: None,
        jti: claims.jti.clone(),
        tenant_id: tenant.id,
        client_id: ClientId::new(claims.client_id.clone()),
        user_id,
        scope: ScopeSet::parse(&claims.scope).unwrap_or_default(),
        audiences: claims.aud.clone(),
        auth_time: claims.auth_time,
        issued_at: claims.iat,
        expires_at: claims.exp,
        family_id: None,
        revoked: false,
    })))
}

/// RFC 7009 §2.1: revokes `token` for `client`. Unknown, expired and
/// already-revoked tokens succeed silently (§2.2); another client's token is
/// refused.
pub async fn revoke(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    token: &str,
    hint: TypeHint,
    now: UnixTime,
) -> Result<(), TokenError> {
    let Some(found) = find(state, tenant, token, hint, now).await? else {
        return Ok(());
    };
    // RFC 7009 §2.1: the token must have been issued to the requesting client.
    if found.client_id() != &client.client_id {
        return Err(TokenError::UnauthorizedClient(
            "the token was not issued to this client",
        ));
    }
    match found {
        // Revoking a refresh token revokes its whole grant: the family and the
        // access tokens issued from it.
        Found::Refresh(record) => state
            .store
            .revoke_family(tenant.id, &record.family_id, now)
            .await
            .map_err(ServiceError::from)?,
        Found::Access(record) if !record.revoked && now < record.expires_at => state
            .store
            .revoke_access_token(&record, now)
            .await
            .map_err(ServiceError::from)?,
        Found::Access(_) => {}
    }
    Ok(())
}

/// An introspection answer (RFC 7662 §2.2).
#[derive(Debug, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten)]
    pub details: Option<Value>,
}

impl Introspection {
    fn inactive() -> Self {
        Introspection {
            active: false,
            details: None,
        }
    }
}

/// RFC 7662: whether `token` is active, and what it is. Anything expired,
/// revoked, malformed, unknown, of another tenant, or whose client or user no
/// longer exists is `{"active": false}`.
pub async fn introspect(
    state: &AppState,
    tenant: &Tenant,
    caller: &Client,
    token: &str,
    hint: TypeHint,
    now: UnixTime,
) -> Result<Introspection, TokenError> {
    let Some(found) = find(state, tenant, token, hint, now).await? else {
        return Ok(Introspection::inactive());
    };
    let issuer = state.issuer(&tenant.name);
    let (record_client, user_id, scope, exp, iat, details) = match &found {
        Found::Refresh(r) => {
            // Refresh tokens are shown only to the client that holds them.
            if r.spent || r.client_id != caller.client_id {
                return Ok(Introspection::inactive());
            }
            (
                &r.client_id,
                r.user_id.clone(),
                &r.scope,
                r.expires_at,
                r.issued_at,
                json!({}),
            )
        }
        Found::Access(a) => {
            if a.revoked {
                return Ok(Introspection::inactive());
            }
            let aud = match a.audiences.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            let details = json!({"token_type": "Bearer", "aud": aud, "jti": a.jti});
            (
                &a.client_id,
                a.user_id.clone(),
                &a.scope,
                a.expires_at,
                a.issued_at,
                details,
            )
        }
    };
    if now.is_at_or_after(exp) {
        return Ok(Introspection::inactive());
    }
    let Some(client) = state
        .client(tenant.id, record_client.as_str())
        .await
        .map_err(ServiceError::from)?
    else {
        return Ok(Introspection::inactive());
    };
    let (sub, username) = match &user_id {
        Some(id) => match state
            .store
            .user_by_id(tenant.id, id)
            .await
            .map_err(ServiceError::from)?
        {
            Some(user) => (user.id, Some(user.username)),
            None => return Ok(Introspection::inactive()),
        },
        None => (client.client_id.to_string(), None),
    };
    let mut details = details;
    if let Value::Object(map) = &mut details {
        map.insert("scope".into(), json!(scope.to_string()));
        map.insert("client_id".into(), json!(client.client_id.as_str()));
        if let Some(username) = username {
            map.insert("username".into(), json!(username));
        }
        map.insert("exp".into(), json!(exp));
        map.insert("iat".into(), json!(iat));
        map.insert("sub".into(), json!(sub));
        map.insert("iss".into(), json!(issuer));
    }
    Ok(Introspection {
        active: true,
        details: Some(details),
    })
}

/// RFC 9701 §5: the introspection answer as a JWT signed by the tenant, for
/// the resource server that asked.
pub async fn introspection_jwt(
    state: &AppState,
    tenant: &Tenant,
    caller: &Client,
    answer: &Introspection,
    now: UnixTime,
) -> Result<String, TokenError> {
    let key = current_signing_key(state, tenant, now).await?;
    let claims = json!({
        "iss": state.issuer(&tenant.name),
        "aud": caller.client_id.as_str(),
        "iat": now,
        "token_introspection": answer,
    });
    Ok(key
        .sign_typed("token-introspection+jwt", &claims)
        .map_err(ServiceError::from)?)
}
