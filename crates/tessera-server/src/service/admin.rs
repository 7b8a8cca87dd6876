//! Administration of tenants, scopes, clients, users and keys, as the CLI
//! drives it.

use tessera_core::jwt::generate_key;
use tessera_core::secret::{BearerSecret, Purpose, password};
use tessera_core::{
    AuthMethod, Client, ClientId, GrantType, Lifetimes, RedirectUri, Scope, ScopeDefinition,
    ScopeSet, SigningKeyRecord, Tenant, TenantId, TenantName, TenantSettings, TokenFormat,
    UnixTime, User,
};
use tessera_store::StoreError;

use super::{ServiceError, new_id, new_secret, random_bytes};
use crate::AppState;

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        AdminError::Service(error.into())
    }
}

fn new_key_record(tenant: TenantId, now: UnixTime) -> Result<SigningKeyRecord, AdminError> {
    let key = generate_key().map_err(ServiceError::from)?;
    Ok(SigningKeyRecord {
        kid: key.kid,
        tenant_id: tenant,
        private_pkcs8: key.private_pkcs8,
        public_jwk: key.public_jwk,
        created_at: now,
        retire_at: None,
    })
}

pub async fn create_tenant(
    state: &AppState,
    name: &str,
    now: UnixTime,
) -> Result<Tenant, AdminError> {
    let name = TenantName::parse(name).map_err(|e| AdminError::Invalid(e.to_string()))?;
    // The key's tenant id is assigned by the store in the same transaction.
    let key = new_key_record(TenantId(0), now)?;
    match state
        .store
        .create_tenant(&name, Lifetimes::default(), key, now)
        .await
    {
        Err(StoreError::Conflict) => Err(AdminError::Exists(format!("tenant '{name}'"))),
        other => Ok(other?),
    }
}

pub async fn tenant(state: &AppState, name: &str) -> Result<Tenant, AdminError> {
    state
        .store
        .tenant_by_name(name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("tenant '{name}'")))
}

/// Changes a tenant's token lifetimes; `None` keeps the current value.
pub async fn set_lifetimes(
    state: &AppState,
    tenant_name: &str,
    access_token: Option<i64>,
    refresh_token: Option<i64>,
    authorization_code: Option<i64>,
) -> Result<Lifetimes, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let current = tenant.lifetimes;
    let lifetimes = Lifetimes {
        access_token: access_token.unwrap_or(current.access_token),
        refresh_token: refresh_token.unwrap_or(current.refresh_token),
        authorization_code: authorization_code.unwrap_or(current.authorization_code),
    }
    .validate()
    .map_err(|e| AdminError::Invalid(e.to_owned()))?;
    state
        .store
        .set_tenant_lifetimes(tenant.id, lifetimes)
        .await?;
    Ok(lifetimes)
}

/// Switches the implicit grant on or off for a tenant.
pub async fn set_allow_implicit(
    state: &AppState,
    tenant_name: &str,
    allow: bool,
) -> Result<TenantSettings, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let mut settings: TenantSettings = tenant.settings;
    settings.allow_implicit = allow;
    state
        .store
        .set_tenant_settings(tenant.id, &settings)
        .await?;
    Ok(settings)
}

/// Adds a new signing key. The previous one stays published for as long as a
/// token it signed can live (the tenant's access-token lifetime).
pub async fn rotate_key(
    state: &AppState,
    tenant_name: &str,
    now: UnixTime,
) -> Result<String, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let key = new_key_record(tenant.id, now)?;
    let kid = key.kid.clone();
    let retire_at = now.plus_seconds(tenant.lifetimes.access_token);
    state
        .store
        .rotate_signing_key(tenant.id, key, retire_at)
        .await?;
    Ok(kid)
}

pub async fn create_scope(
    state: &AppState,
    tenant_name: &str,
    name: &str,
    description: &str,
) -> Result<ScopeDefinition, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let name = Scope::parse(name).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let definition = ScopeDefinition {
        name,
        description: description.to_owned(),
    };
    state.store.put_scope(tenant.id, &definition).await?;
    Ok(definition)
}

/// What `client create` asks for.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub token_format: TokenFormat,
}

/// A created client and the secret shown once.
#[derive(Debug)]
pub struct CreatedClient {
    pub client: Client,
    pub secret: Option<BearerSecret>,
}

pub async fn create_client(
    state: &AppState,
    tenant_name: &str,
    request: NewClient,
    now: UnixTime,
) -> Result<CreatedClient, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    if request.name.trim().is_empty() {
        return Err(AdminError::Invalid("a client needs a name".into()));
    }
    let redirect_uris = request
        .redirect_uris
        .iter()
        .map(|uri| RedirectUri::parse(uri).map_err(|e| AdminError::Invalid(format!("{uri}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s).map_err(|e| AdminError::Invalid(format!("{s}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut grant_types = request.grant_types.clone();
    grant_types.sort();
    grant_types.dedup();
    if grant_types.is_empty() {
        return Err(AdminError::Invalid(
            "a client needs at least one --grant-type".into(),
        ));
    }
    let is_public = request.auth_method == AuthMethod::None;
    if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
        return Err(AdminError::Invalid(
            "the authorization_code grant needs at least one --redirect-uri".into(),
        ));
    }
    // RFC 6749 §4.4: client credentials are for confidential clients only.
    if is_public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err(AdminError::Invalid(
            "a public client cannot use the client_credentials grant".into(),
        ));
    }
    if request.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(AdminError::Invalid("an audience cannot be empty".into()));
    }
    let secret = (!is_public).then(new_secret);
    let client = Client {
        tenant_id: tenant.id,
        client_id: ClientId::new(new_id()),
        name: request.name,
        secret_hash: secret
            .as_ref()
            .map(|s| state.hasher.hash(Purpose::ClientSecret, s.expose())),
        auth_method: request.auth_method,
        grant_types,
        redirect_uris,
        scopes: ScopeSet::from_scopes(scopes),
        audiences: request.audiences,
        token_format: request.token_format,
        created_at: now,
    };
    state.store.create_client(&client).await?;
    Ok(CreatedClient { client, secret })
}

pub async fn create_user(
    state: &AppState,
    tenant_name: &str,
    username: &str,
    password_text: &str,
    now: UnixTime,
) -> Result<User, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    if username.is_empty() || username.len() > 255 || username.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "a username is 1 to 255 characters without control characters".into(),
        ));
    }
    if password_text.is_empty() {
        return Err(AdminError::Invalid("the password is empty".into()));
    }
    let salt = random_bytes::<16>();
    let password_text = password_text.to_owned();
    let password_hash = tokio::task::spawn_blocking(move || password::hash(&password_text, salt))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let user = User {
        id: new_id(),
        tenant_id: tenant.id,
        username: username.to_owned(),
        password_hash,
        created_at: now,
    };
    match state.store.create_user(&user).await {
        Err(StoreError::Conflict) => Err(AdminError::Exists(format!("user '{username}'"))),
        other => other.map(|()| user).map_err(AdminError::from),
    }
}
