//! `tessera export` and `tessera import`: everything a deployment is
//! configured with, as one JSON document, to move from one database to
//! another (SQLite to PostgreSQL, say).
//!
//! Carried over: the hashing key, and per tenant its settings, look,
//! published signing keys, scopes, clients (with their secret hashes), users
//! (with their password hashes) and consents. Not carried over: what is
//! short-lived or re-obtainable — sessions, codes, refresh and access tokens,
//! and throttling counts. Users sign in again and clients get new tokens; JWTs
//! already issued stay valid, as their keys move along.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tessera_core::branding::{Branding, parse_logo};
use tessera_core::{
    Client, ClientId, Lifetimes, RedirectUri, Scope, ScopeDefinition, ScopeSet, SigningKeyRecord,
    TenantName, TenantSettings, UnixTime, User,
};

use super::admin::AdminError;
use crate::AppState;
use crate::state::HASH_KEY_NAME;

const FORMAT: &str = "tessera-export";
const VERSION: u32 = 1;

/// The whole document. Its secrets (the hashing key, private signing keys)
/// make it as sensitive as the database itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub version: u32,
    pub exported_at: i64,
    /// Base64 of the key every client secret, code and token is hashed with.
    pub secret_hash_key: String,
    pub tenants: Vec<TenantExport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantExport {
    pub name: String,
    pub created_at: i64,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub authorization_code_ttl: i64,
    pub allow_implicit: bool,
    pub branding: Option<BrandingExport>,
    /// Published keys; the one without `retire_at` signs.
    pub keys: Vec<KeyExport>,
    pub scopes: Vec<ScopeExport>,
    pub clients: Vec<ClientExport>,
    pub users: Vec<UserExport>,
    pub consents: Vec<ConsentExport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BrandingExport {
    pub display_name: Option<String>,
    pub accent_color: Option<String>,
    /// Base64 of the image.
    pub logo: Option<String>,
    pub css: Option<String>,
    pub version: i64,
}

#[derive(Serialize, Deserialize)]
pub struct KeyExport {
    pub kid: String,
    /// Base64 of the PKCS#8 private key.
    pub private_pkcs8: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub retire_at: Option<i64>,
}

impl std::fmt::Debug for KeyExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExport").field("kid", &self.kid).finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScopeExport {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClientExport {
    pub client_id: String,
    pub name: String,
    /// Base64 of the keyed hash of its secret; absent for public clients.
    pub secret_hash: Option<String>,
    pub auth_method: String,
    pub grant_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub token_format: String,
    pub app_type: Option<String>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub created_at: i64,
}

#[derive(Serialize, Deserialize)]
pub struct UserExport {
    pub id: String,
    pub username: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    pub created_at: i64,
}

impl std::fmt::Debug for UserExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserExport")
            .field("username", &self.username)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConsentExport {
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub granted_at: i64,
}

/// Reads everything `import` needs from the database.
pub async fn export(state: &AppState, now: UnixTime) -> Result<Export, AdminError> {
    let store = &state.store;
    let key = store.server_secret(HASH_KEY_NAME, &Vec::new).await?;
    let mut tenants = Vec::new();
    for tenant in store.list_tenants().await? {
        let branding = match store.branding_summary(tenant.id).await? {
            Some(summary) => {
                let branding = store.branding(tenant.id).await?;
                Some(BrandingExport {
                    display_name: branding.display_name,
                    accent_color: branding.accent_color,
                    logo: branding.logo.map(|logo| STANDARD.encode(logo.bytes)),
                    css: branding.css,
                    version: summary.version,
                })
            }
            None => None,
        };
        let keys = store
            .published_keys(tenant.id, now)
            .await?
            .into_iter()
            .map(|k| KeyExport {
                kid: k.kid,
                private_pkcs8: STANDARD.encode(k.private_pkcs8),
                public_jwk: k.public_jwk,
                created_at: k.created_at.0,
                retire_at: k.retire_at.map(|r| r.0),
            })
            .collect();
        let scopes = store
            .list_scopes(tenant.id)
            .await?
            .into_iter()
            .map(|s| ScopeExport {
                name: s.name.to_string(),
                description: s.description,
            })
            .collect();
        let clients = store
            .list_clients(tenant.id)
            .await?
            .into_iter()
            .map(|c| ClientExport {
                client_id: c.client_id.to_string(),
                name: c.name,
                secret_hash: c.secret_hash.map(|h| STANDARD.encode(h.0)),
                auth_method: c.auth_method.as_str().to_owned(),
                grant_types: c
                    .grant_types
                    .iter()
                    .map(|g| g.as_str().to_owned())
                    .collect(),
                redirect_uris: c
                    .redirect_uris
                    .iter()
                    .map(|u| u.as_str().to_owned())
                    .collect(),
                scopes: c.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                audiences: c.audiences,
                token_format: c.token_format.as_str().to_owned(),
                app_type: c.app_type.map(|t| t.as_str().to_owned()),
                access_token_ttl: c.access_token_ttl,
                refresh_token_ttl: c.refresh_token_ttl,
                created_at: c.created_at.0,
            })
            .collect();
        let mut users = Vec::new();
        let mut consents = Vec::new();
        for user in store.list_users(tenant.id).await? {
            for consent in store.list_consents(tenant.id, &user.id).await? {
                consents.push(ConsentExport {
                    user_id: user.id.clone(),
                    client_id: consent.client_id.to_string(),
                    scope: consent.scope.to_string(),
                    granted_at: consent.granted_at.0,
                });
            }
            users.push(UserExport {
                id: user.id,
                username: user.username,
                password_hash: user.password_hash,
                created_at: user.created_at.0,
            });
        }
        tenants.push(TenantExport {
            name: tenant.name.to_string(),
            created_at: tenant.created_at.0,
            access_token_ttl: tenant.lifetimes.access_token,
            refresh_token_ttl: tenant.lifetimes.refresh_token,
            authorization_code_ttl: tenant.lifetimes.authorization_code,
            allow_implicit: tenant.settings.allow_implicit,
            branding,
            keys,
            scopes,
            clients,
            users,
            consents,
        });
    }
    Ok(Export {
        format: FORMAT.to_owned(),
        version: VERSION,
        exported_at: now.0,
        secret_hash_key: STANDARD.encode(key),
        tenants,
    })
}

/// Writes an export into this database. Its tenants must not exist here,
/// and a database that already has tenants must share the export's hashing
/// key (else their secrets could not both be checked). A tenant that fails
/// half-way is removed again, so a corrected import can be retried.
pub async fn import(state: &AppState, export: Export) -> Result<Vec<String>, AdminError> {
    if export.format != FORMAT || export.version != VERSION {
        return Err(AdminError::Invalid(format!(
            "not a {FORMAT} document of version {VERSION}"
        )));
    }
    let store = &state.store;
    let key = decode(&export.secret_hash_key, "secret_hash_key")?;
    let existing = store.list_tenants().await?;
    for tenant in &export.tenants {
        if existing.iter().any(|t| t.name.as_str() == tenant.name) {
            return Err(AdminError::Exists(format!("tenant {}", tenant.name)));
        }
    }
    let current_key = store.server_secret(HASH_KEY_NAME, &|| key.clone()).await?;
    if current_key != key {
        if !existing.is_empty() {
            return Err(AdminError::Invalid(
                "this database already has tenants whose secrets are hashed with another key; \
                 import into an empty database"
                    .into(),
            ));
        }
        store.replace_server_secret(HASH_KEY_NAME, &key).await?;
    }
    let mut imported = Vec::new();
    for tenant in export.tenants {
        let name = tenant.name.clone();
        if let Err(error) = import_tenant(state, tenant).await {
            let _ = store.delete_tenant(&name).await;
            return Err(error);
        }
        imported.push(name);
    }
    Ok(imported)
}

async fn import_tenant(state: &AppState, t: TenantExport) -> Result<(), AdminError> {
    let store = &state.store;
    let name = TenantName::parse(&t.name).map_err(|e| AdminError::Invalid(e.to_string()))?;
    let lifetimes = Lifetimes {
        access_token: t.access_token_ttl,
        refresh_token: t.refresh_token_ttl,
        authorization_code: t.authorization_code_ttl,
    }
    .validate()
    .map_err(|e| AdminError::Invalid(e.to_owned()))?;
    let mut keys = Vec::new();
    for k in t.keys {
        keys.push(SigningKeyRecord {
            kid: k.kid,
            tenant_id: tessera_core::TenantId(0),
            private_pkcs8: decode(&k.private_pkcs8, "private_pkcs8")?,
            public_jwk: k.public_jwk,
            created_at: UnixTime(k.created_at),
            retire_at: k.retire_at.map(UnixTime),
        });
    }
    let Some(signing) = keys.iter().position(|k| k.retire_at.is_none()) else {
        return Err(AdminError::Invalid(format!(
            "tenant {} has no current signing key",
            t.name
        )));
    };
    let first_key = keys.remove(signing);
    // A key that does not parse would only fail later, at the first token.
    tessera_core::jwt::SigningKey::from_pkcs8(&first_key.kid, &first_key.private_pkcs8)
        .map_err(|e| AdminError::Invalid(format!("signing key {}: {e}", first_key.kid)))?;
    let tenant = store
        .create_tenant(&name, lifetimes, first_key, UnixTime(t.created_at))
        .await?;
    store
        .set_tenant_settings(
            tenant.id,
            &TenantSettings {
                allow_implicit: t.allow_implicit,
            },
        )
        .await?;
    for mut key in keys {
        key.tenant_id = tenant.id;
        store.insert_signing_key(&key).await?;
    }
    if let Some(b) = t.branding {
        let logo = match b.logo {
            Some(text) => Some(
                parse_logo(decode(&text, "logo")?)
                    .map_err(|e| AdminError::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        let branding = Branding {
            display_name: b.display_name,
            accent_color: b.accent_color,
            logo,
            css: b.css,
        };
        store.put_branding(tenant.id, &branding, b.version).await?;
    }
    for s in t.scopes {
        let scope = ScopeDefinition {
            name: Scope::parse(&s.name).map_err(|e| AdminError::Invalid(e.to_string()))?,
            description: s.description,
        };
        store.put_scope(tenant.id, &scope).await?;
    }
    let invalid = |e: tessera_core::model::UnknownValue| AdminError::Invalid(e.to_string());
    for c in t.clients {
        let client = Client {
            tenant_id: tenant.id,
            client_id: ClientId::new(c.client_id),
            name: c.name,
            secret_hash: match c.secret_hash {
                Some(text) => Some(tessera_core::secret::SecretHash(decode(
                    &text,
                    "secret_hash",
                )?)),
                None => None,
            },
            auth_method: c.auth_method.parse().map_err(invalid)?,
            grant_types: c
                .grant_types
                .iter()
                .map(|g| g.parse())
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
            redirect_uris: c
                .redirect_uris
                .into_iter()
                .map(RedirectUri::from_stored)
                .collect(),
            scopes: scope_set(&c.scopes.join(" "))?,
            audiences: c.audiences,
            token_format: c.token_format.parse().map_err(invalid)?,
            app_type: c.app_type.map(|t| t.parse()).transpose().map_err(invalid)?,
            access_token_ttl: c.access_token_ttl,
            refresh_token_ttl: c.refresh_token_ttl,
            created_at: UnixTime(c.created_at),
        };
        store.create_client(&client).await?;
    }
    for u in t.users {
        store
            .create_user(&User {
                id: u.id,
                tenant_id: tenant.id,
                username: u.username,
                password_hash: u.password_hash,
                created_at: UnixTime(u.created_at),
            })
            .await?;
    }
    for c in t.consents {
        let scope = scope_set(&c.scope)?;
        store
            .put_consent(
                tenant.id,
                &c.user_id,
                &c.client_id,
                &scope,
                UnixTime(c.granted_at),
            )
            .await?;
    }
    Ok(())
}

fn scope_set(text: &str) -> Result<ScopeSet, AdminError> {
    if text.is_empty() {
        return Ok(ScopeSet::default());
    }
    ScopeSet::parse(text).map_err(|e| AdminError::Invalid(e.to_string()))
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, AdminError> {
    STANDARD
        .decode(text)
        .map_err(|_| AdminError::Invalid(format!("{what} is not base64")))
}
