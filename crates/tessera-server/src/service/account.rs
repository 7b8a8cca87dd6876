//! The resource owner's own page: the applications they allowed, revoking
//! them, and signing out.

use tessera_core::secret::Purpose;
use tessera_core::{Consent, Session, Tenant, UnixTime};

use super::ServiceError;
use crate::AppState;

/// Who is signed in and what they have allowed.
#[derive(Debug)]
pub struct Overview {
    pub username: String,
    pub consents: Vec<Consent>,
}

pub async fn overview(
    state: &AppState,
    tenant: &Tenant,
    session: &Session,
) -> Result<Overview, ServiceError> {
    let username = state
        .store
        .user_by_id(tenant.id, &session.user_id)
        .await?
        .map(|user| user.username)
        .unwrap_or_default();
    let consents = state
        .store
        .list_consents(tenant.id, &session.user_id)
        .await?;
    Ok(Overview { username, consents })
}

/// Withdraws the consent given to `client_id` and revokes every token that
/// client holds for this user (RFC 7009 §2: revocation ends the grant).
pub async fn revoke(
    state: &AppState,
    tenant: &Tenant,
    session: &Session,
    client_id: &str,
    now: UnixTime,
) -> Result<bool, ServiceError> {
    Ok(state
        .store
        .revoke_consent(tenant.id, &session.user_id, client_id, now)
        .await?)
}

/// Ends the session that `session_id` names.
pub async fn logout(
    state: &AppState,
    tenant: &Tenant,
    session_id: &str,
) -> Result<(), ServiceError> {
    let id_hash = state.hasher.hash(Purpose::Session, session_id);
    Ok(state.store.delete_session(tenant.id, &id_hash).await?)
}
