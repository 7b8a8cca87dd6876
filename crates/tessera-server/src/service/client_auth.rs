//! Client authentication at the token endpoint (RFC 6749 §2.3).

use std::sync::Arc;

use tessera_core::secret::{BearerSecret, Purpose};
use tessera_core::{AuthMethod, Client, Tenant, TokenError};

use super::ServiceError;
use crate::AppState;

/// The credentials a token request carries, as the HTTP edge found them.
#[derive(Debug)]
pub enum PresentedCredentials {
    /// `Authorization: Basic` with the id and secret form-urldecoded (§2.3.1).
    Basic {
        client_id: String,
        secret: BearerSecret,
    },
    /// `client_id` and `client_secret` in the body (§2.3.1, `client_secret_post`).
    Post {
        client_id: String,
        secret: BearerSecret,
    },
    /// Only `client_id` in the body: a public client (§3.2.1).
    IdOnly { client_id: String },
    /// Nothing identifies the client.
    Nothing,
}

impl PresentedCredentials {
    fn method(&self) -> Option<AuthMethod> {
        match self {
            PresentedCredentials::Basic { .. } => Some(AuthMethod::ClientSecretBasic),
            PresentedCredentials::Post { .. } => Some(AuthMethod::ClientSecretPost),
            PresentedCredentials::IdOnly { .. } => Some(AuthMethod::None),
            PresentedCredentials::Nothing => None,
        }
    }

    fn is_basic(&self) -> bool {
        matches!(self, PresentedCredentials::Basic { .. })
    }
}

/// Finds the client and checks its credentials. A client uses only the method
/// it was registered with; every failure is `invalid_client` (§5.2).
pub async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    presented: PresentedCredentials,
) -> Result<Arc<Client>, TokenError> {
    let basic_attempted = presented.is_basic();
    let fail = |description| TokenError::InvalidClient {
        description,
        basic_attempted,
    };
    let (client_id, secret) = match &presented {
        PresentedCredentials::Basic { client_id, secret }
        | PresentedCredentials::Post { client_id, secret } => (client_id.as_str(), Some(secret)),
        PresentedCredentials::IdOnly { client_id } => (client_id.as_str(), None),
        PresentedCredentials::Nothing => return Err(fail("client authentication is required")),
    };
    let Some(client) = state
        .client(tenant.id, client_id)
        .await
        .map_err(ServiceError::from)?
    else {
        return Err(fail("client authentication failed"));
    };
    if presented.method() != Some(client.auth_method) {
        return Err(fail("client authentication failed"));
    }
    match (secret, &client.secret_hash) {
        (None, None) => Ok(client),
        (Some(secret), Some(stored)) => {
            // Keyed hash compared in constant time; see SecretHasher for why a
            // fast hash is right for server-generated secrets.
            let presented_hash = state.hasher.hash(Purpose::ClientSecret, secret.expose());
            if presented_hash.matches(stored) {
                Ok(client)
            } else {
                Err(fail("client authentication failed"))
            }
        }
        _ => Err(fail("client authentication failed")),
    }
}
