//! Administration of tenants, scopes, clients, users and keys, as the CLI
//! drives it.

use tessera_core::branding::{self, Branding};
use tessera_core::jwt::generate_key;
use tessera_core::redirect::is_private_use_scheme;
use tessera_core::secret::{BearerSecret, Purpose, password};
use tessera_core::{
    AppType, AuthMethod, Client, ClientId, GrantType, Lifetimes, RedirectUri, Scope,
    ScopeDefinition, ScopeSet, SigningKeyRecord, Tenant, TenantId, TenantName, TenantSettings,
    TokenFormat, UnixTime, User,
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

/// Changes to a tenant, as `tenant set` gives them; `None` keeps what is
/// there.
#[derive(Debug, Default)]
pub struct TenantChanges {
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub code_ttl: Option<i64>,
    pub allow_implicit: Option<bool>,
    pub branding: BrandingChanges,
}

/// Changes to a tenant's look; `None` keeps what is there.
#[derive(Debug, Default)]
pub struct BrandingChanges {
    pub display_name: Option<String>,
    pub accent_color: Option<String>,
    pub logo: Option<Vec<u8>>,
    pub css: Option<Vec<u8>>,
}

impl BrandingChanges {
    fn is_empty(&self) -> bool {
        self.display_name.is_none()
            && self.accent_color.is_none()
            && self.logo.is_none()
            && self.css.is_none()
    }
}

/// A tenant's lifetimes, settings and look, as they stand after a change.
#[derive(Debug)]
pub struct TenantSetup {
    pub lifetimes: Lifetimes,
    pub settings: TenantSettings,
    pub branding: Branding,
}

/// Checks every change first and then stores them all in one transaction,
/// so that a bad value changes nothing.
pub async fn set_tenant(
    state: &AppState,
    tenant_name: &str,
    changes: TenantChanges,
    now: UnixTime,
) -> Result<TenantSetup, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let lifetimes = changed_lifetimes(
        tenant.lifetimes,
        changes.access_token_ttl,
        changes.refresh_token_ttl,
        changes.code_ttl,
    )?;
    let mut settings = tenant.settings;
    if let Some(allow) = changes.allow_implicit {
        settings.allow_implicit = allow;
    }
    let mut branding = state.store.branding(tenant.id).await?;
    let version = if changes.branding.is_empty() {
        None
    } else {
        apply_branding(&mut branding, changes.branding)?;
        // The version busts browser caches of the logo and stylesheet.
        Some(
            now.0.max(
                state
                    .store
                    .branding_summary(tenant.id)
                    .await?
                    .map_or(0, |s| s.version + 1),
            ),
        )
    };
    state
        .store
        .update_tenant(
            tenant.id,
            lifetimes,
            &settings,
            version.map(|version| (&branding, version)),
        )
        .await?;
    Ok(TenantSetup {
        lifetimes,
        settings,
        branding,
    })
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
    let lifetimes = changed_lifetimes(
        tenant.lifetimes,
        access_token,
        refresh_token,
        authorization_code,
    )?;
    state
        .store
        .update_tenant(tenant.id, lifetimes, &tenant.settings, None)
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

/// Validates and stores changes to a tenant's look.
pub async fn set_branding(
    state: &AppState,
    tenant_name: &str,
    changes: BrandingChanges,
    now: UnixTime,
) -> Result<Branding, AdminError> {
    let changes = TenantChanges {
        branding: changes,
        ..TenantChanges::default()
    };
    Ok(set_tenant(state, tenant_name, changes, now).await?.branding)
}

/// `current` with the given lifetimes replaced, within their ranges.
fn changed_lifetimes(
    current: Lifetimes,
    access_token: Option<i64>,
    refresh_token: Option<i64>,
    authorization_code: Option<i64>,
) -> Result<Lifetimes, AdminError> {
    Lifetimes {
        access_token: access_token.unwrap_or(current.access_token),
        refresh_token: refresh_token.unwrap_or(current.refresh_token),
        authorization_code: authorization_code.unwrap_or(current.authorization_code),
    }
    .validate()
    .map_err(|e| AdminError::Invalid(e.to_owned()))
}

/// Validates `changes` and applies them to `branding`.
fn apply_branding(branding: &mut Branding, changes: BrandingChanges) -> Result<(), AdminError> {
    let invalid = |e: branding::BrandingError| AdminError::Invalid(e.to_string());
    if let Some(name) = changes.display_name {
        branding.display_name = Some(branding::parse_display_name(&name).map_err(invalid)?);
    }
    if let Some(color) = changes.accent_color {
        branding.accent_color = Some(branding::parse_accent_color(&color).map_err(invalid)?);
    }
    if let Some(logo) = changes.logo {
        branding.logo = Some(branding::parse_logo(logo).map_err(invalid)?);
    }
    if let Some(css) = changes.css {
        branding.css = Some(branding::parse_css(css).map_err(invalid)?);
    }
    Ok(())
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
    // The old key stays published while any token it signed can be alive:
    // the longest access-token lifetime of the tenant and its clients.
    let longest = state
        .store
        .list_clients(tenant.id)
        .await?
        .iter()
        .map(|c| c.lifetimes(tenant.lifetimes).access_token)
        .fold(tenant.lifetimes.access_token, i64::max);
    let retire_at = now.plus_seconds(longest);
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

/// A client's settings, as `client create` and `client set` give them.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub auth_method: AuthMethod,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub token_format: TokenFormat,
    pub app_type: Option<AppType>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
}

impl NewClient {
    /// The secure defaults for a kind of application (`--type`).
    pub fn of_type(name: &str, app_type: AppType) -> Self {
        let (confidential, grant_types) = app_type.defaults();
        NewClient {
            name: name.to_owned(),
            auth_method: if confidential {
                AuthMethod::ClientSecretBasic
            } else {
                AuthMethod::None
            },
            grant_types,
            redirect_uris: Vec::new(),
            scopes: Vec::new(),
            audiences: Vec::new(),
            token_format: TokenFormat::Jwt,
            app_type: Some(app_type),
            access_token_ttl: None,
            refresh_token_ttl: None,
        }
    }
}

impl NewClient {
    /// The settings of an existing client, to change some of them.
    pub fn from_client(client: &Client) -> Self {
        NewClient {
            name: client.name.clone(),
            auth_method: client.auth_method,
            grant_types: client.grant_types.clone(),
            redirect_uris: client
                .redirect_uris
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect(),
            scopes: client
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            audiences: client.audiences.clone(),
            token_format: client.token_format,
            app_type: client.app_type,
            access_token_ttl: client.access_token_ttl,
            refresh_token_ttl: client.refresh_token_ttl,
        }
    }
}

/// A created client and the secret shown once.
#[derive(Debug)]
pub struct CreatedClient {
    pub client: Client,
    pub secret: Option<BearerSecret>,
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

/// Checks `request` and builds the client it describes (without a secret).
fn build_client(
    tenant: &Tenant,
    client_id: ClientId,
    request: NewClient,
    now: UnixTime,
) -> Result<Client, AdminError> {
    if request.name.trim().is_empty() {
        return Err(invalid("a client needs a name"));
    }
    let is_native = request.app_type == Some(AppType::Native);
    let redirect_uris = request
        .redirect_uris
        .iter()
        .map(|uri| {
            let parsed = RedirectUri::parse(uri).map_err(|e| invalid(format!("{uri}: {e}")))?;
            // RFC 8252 §7.1: private-use schemes belong to native apps, and
            // should be reverse domain names the app controls.
            if is_private_use_scheme(uri) {
                if !is_native {
                    return Err(invalid(format!("{uri}: private-use URI schemes are for --type native clients only")));
                }
                if !uri.split(':').next().is_some_and(|scheme| scheme.contains('.')) {
                    return Err(invalid(format!("{uri}: a private-use scheme must be a reverse domain name, such as com.example.app")));
                }
            }
            Ok(parsed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s).map_err(|e| invalid(format!("{s}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut grant_types = request.grant_types.clone();
    grant_types.sort();
    grant_types.dedup();
    if grant_types.is_empty() {
        return Err(invalid("a client needs at least one --grant-type"));
    }
    let is_public = request.auth_method == AuthMethod::None;
    let redirecting = grant_types.contains(&GrantType::AuthorizationCode)
        || grant_types.contains(&GrantType::Implicit);
    if redirecting && redirect_uris.is_empty() {
        return Err(invalid(
            "the authorization_code and implicit grants need at least one --redirect-uri",
        ));
    }
    // RFC 6749 §4.4: client credentials are for confidential clients only.
    if is_public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err(invalid(
            "a public client cannot use the client_credentials grant",
        ));
    }
    if request.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(invalid("an audience cannot be empty"));
    }
    // The client's lifetimes obey the same bounds as the tenant's.
    let lifetimes = Lifetimes {
        access_token: request
            .access_token_ttl
            .unwrap_or(tenant.lifetimes.access_token),
        refresh_token: request
            .refresh_token_ttl
            .unwrap_or(tenant.lifetimes.refresh_token),
        authorization_code: tenant.lifetimes.authorization_code,
    };
    lifetimes.validate().map_err(invalid)?;
    Ok(Client {
        tenant_id: tenant.id,
        client_id,
        name: request.name,
        secret_hash: None,
        auth_method: request.auth_method,
        grant_types,
        redirect_uris,
        scopes: ScopeSet::from_scopes(scopes),
        audiences: request.audiences,
        token_format: request.token_format,
        app_type: request.app_type,
        access_token_ttl: request.access_token_ttl,
        refresh_token_ttl: request.refresh_token_ttl,
        created_at: now,
    })
}

pub async fn create_client(
    state: &AppState,
    tenant_name: &str,
    request: NewClient,
    now: UnixTime,
) -> Result<CreatedClient, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let mut client = build_client(&tenant, ClientId::new(new_id()), request, now)?;
    let secret = (!client.is_public()).then(new_secret);
    client.secret_hash = secret
        .as_ref()
        .map(|s| state.hasher.hash(Purpose::ClientSecret, s.expose()));
    state.store.create_client(&client).await?;
    Ok(CreatedClient { client, secret })
}

/// The settings of an existing client, as `client set` starts from.
pub async fn client(
    state: &AppState,
    tenant_name: &str,
    client_id: &str,
) -> Result<Client, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    state
        .store
        .client(tenant.id, client_id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("client '{client_id}'")))
}

/// Replaces a client's settings. Its id, secret and authentication method
/// stay: a confidential client cannot become public or the other way round.
pub async fn update_client(
    state: &AppState,
    tenant_name: &str,
    client_id: &str,
    changes: NewClient,
) -> Result<Client, AdminError> {
    let tenant = tenant(state, tenant_name).await?;
    let existing = client(state, tenant_name, client_id).await?;
    if existing.is_public() != (changes.auth_method == AuthMethod::None) {
        return Err(invalid(
            "a client cannot change between public and confidential; create a new one",
        ));
    }
    let mut updated = build_client(
        &tenant,
        existing.client_id.clone(),
        changes,
        existing.created_at,
    )?;
    updated.secret_hash = existing.secret_hash;
    updated.auth_method = existing.auth_method;
    state.store.update_client(&updated).await?;
    Ok(updated)
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
