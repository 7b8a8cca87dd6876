//! The one implementation of [`Store`](crate::Store) for every SQL backend.
//! The SQL is written once, in the dialect SQLite and PostgreSQL share (`$n`
//! parameters, `ON CONFLICT`, `RETURNING`, `string_agg`), and `sql_store!`
//! instantiates it for each sqlx driver. The hot path's reads and token
//! writes are the exceptions: each backend does them its own way (see the
//! macro's documentation). Single use of codes and refresh
//! tokens rests on conditional `UPDATE`s, never on read-then-write: SQLite
//! serialises writers, and under PostgreSQL's row locks a second concurrent
//! `UPDATE ... WHERE used_at IS NULL` re-reads the row and matches nothing.

/// Implements `Store` for `$store`, a struct with a `pool` of the sqlx
/// database `$db` for reads, a `write()` method that hands out the
/// connection for a write (a pooled one on PostgreSQL, the one writer
/// connection on SQLite), a `group_write()` method that does the token
/// writes of [`crate::group_commit::Work`] in the backend's batches, and
/// the work each backend does its own way: `close_background_work()`,
/// `read_config_version()` and the
/// token reads of the hot path, `read_refresh_token()`,
/// `read_access_token_by_hash()` and `read_access_token_by_jti()`.
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
use async_trait::async_trait;
use sqlx::Row;
use tessera_core::branding::{Branding, BrandingSummary, parse_logo};
use tessera_core::grant::{Prompt, ResponseType};
use tessera_core::pkce::CodeChallenge;
use tessera_core::secret::SecretHash;
use tessera_core::{
    AccessTokenRecord, AuthorizationCode, Client, ClientId, Consent, Lifetimes,
    PendingAuthorization, RedirectUri, RefreshTokenRecord, Scope, ScopeDefinition, ScopeSet,
    Session, SigningKeyRecord, Tenant, TenantId, TenantName, TenantSettings, UnixTime, User,
};

use crate::group_commit::{Done, Work};
use crate::{
    CodeRedemption, DecideIssue, DecideSuccessor, Rotation, Store, StoreError, StoreResult,
};

fn scope_set(text: &str) -> ScopeSet {
    // Stored scopes were validated on the way in.
    ScopeSet::parse(text).unwrap_or_default()
}

fn json_strings(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn to_json(values: &[String]) -> String {
    serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned())
}

fn tenant_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<Tenant> {
    let name: String = row.try_get("name")?;
    Ok(Tenant {
        id: TenantId(row.try_get("id")?),
        name: TenantName::parse(&name).map_err(|e| StoreError::Internal(e.to_string()))?,
        lifetimes: Lifetimes {
            access_token: row.try_get("access_token_ttl")?,
            refresh_token: row.try_get("refresh_token_ttl")?,
            authorization_code: row.try_get("authorization_code_ttl")?,
        },
        settings: TenantSettings {
            allow_implicit: row.try_get("allow_implicit")?,
        },
        created_at: UnixTime(row.try_get("created_at")?),
    })
}

fn key_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.try_get("kid")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        private_pkcs8: row.try_get("private_pkcs8")?,
        public_jwk: row.try_get("public_jwk")?,
        created_at: UnixTime(row.try_get("created_at")?),
        retire_at: row.try_get::<Option<i64>, _>("retire_at")?.map(UnixTime),
    })
}

fn client_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<Client> {
    let parse_err = |e: tessera_core::model::UnknownValue| StoreError::Internal(e.to_string());
    let grant_types: String = row.try_get("grant_types")?;
    let scopes: Option<String> = row.try_get("scopes")?;
    Ok(Client {
        tenant_id: TenantId(row.try_get("tenant_id")?),
        client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
        name: row.try_get("name")?,
        secret_hash: row
            .try_get::<Option<Vec<u8>>, _>("secret_hash")?
            .map(SecretHash),
        auth_method: row
            .try_get::<String, _>("auth_method")?
            .parse()
            .map_err(parse_err)?,
        grant_types: grant_types
            .split(' ')
            .filter(|g| !g.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(parse_err)?,
        redirect_uris: json_strings(&row.try_get::<String, _>("redirect_uris")?)
            .into_iter()
            .map(RedirectUri::from_stored)
            .collect(),
        scopes: scope_set(scopes.as_deref().unwrap_or("")),
        audiences: json_strings(&row.try_get::<String, _>("audiences")?),
        token_format: row
            .try_get::<String, _>("token_format")?
            .parse()
            .map_err(parse_err)?,
        app_type: row
            .try_get::<Option<String>, _>("app_type")?
            .map(|t| t.parse())
            .transpose()
            .map_err(parse_err)?,
        access_token_ttl: row.try_get("access_token_ttl")?,
        refresh_token_ttl: row.try_get("refresh_token_ttl")?,
        created_at: UnixTime(row.try_get("created_at")?),
    })
}

fn user_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        created_at: UnixTime(row.try_get("created_at")?),
    })
}

// PostgreSQL's write batch reads codes with it; SQLite's batch thread reads
// them through rusqlite (`sqlite_read.rs`).
#[allow(dead_code)]
fn code_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: SecretHash(row.try_get("code_hash")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
        user_id: row.try_get("user_id")?,
        redirect_uri: RedirectUri::from_stored(row.try_get("redirect_uri")?),
        redirect_uri_in_request: row.try_get("redirect_uri_in_request")?,
        scope: scope_set(&row.try_get::<String, _>("scope")?),
        code_challenge: row
            .try_get::<Option<String>, _>("code_challenge")?
            .map(CodeChallenge::from_stored),
        auth_time: UnixTime(row.try_get("auth_time")?),
        expires_at: UnixTime(row.try_get("expires_at")?),
        family_id: row.try_get("family_id")?,
    })
}

// PostgreSQL's token reads map rows with these two, and its write batch
// with the first; SQLite reads tokens through rusqlite (`sqlite_read.rs`).
#[allow(dead_code)]
fn refresh_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        token_hash: SecretHash(row.try_get("token_hash")?),
        family_id: row.try_get("family_id")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
        user_id: row.try_get("user_id")?,
        scope: scope_set(&row.try_get::<String, _>("scope")?),
        auth_time: row.try_get::<Option<i64>, _>("auth_time")?.map(UnixTime),
        issued_at: UnixTime(row.try_get("issued_at")?),
        expires_at: UnixTime(row.try_get("expires_at")?),
        spent: row.try_get::<Option<i64>, _>("used_at")?.is_some()
            || row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

#[allow(dead_code)]
fn access_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        token_hash: row
            .try_get::<Option<Vec<u8>>, _>("token_hash")?
            .map(SecretHash),
        jti: row.try_get("jti")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
        user_id: row.try_get("user_id")?,
        scope: scope_set(&row.try_get::<String, _>("scope")?),
        audiences: json_strings(&row.try_get::<String, _>("audiences")?),
        auth_time: row.try_get::<Option<i64>, _>("auth_time")?.map(UnixTime),
        issued_at: UnixTime(row.try_get("issued_at")?),
        expires_at: UnixTime(row.try_get("expires_at")?),
        family_id: row.try_get("family_id")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

const CONSENT_SELECT: &str = "SELECT co.client_id, c.name AS client_name, co.scope, co.granted_at \
     FROM consents co JOIN clients c ON c.client_id = co.client_id WHERE co.tenant_id = $1";

fn consent_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<Consent> {
    Ok(Consent {
        client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
        client_name: row.try_get("client_name")?,
        scope: scope_set(&row.try_get::<String, _>("scope")?),
        granted_at: UnixTime(row.try_get("granted_at")?),
    })
}

const CLIENT_SELECT: &str = "SELECT c.*, (SELECT string_agg(scope, ' ') FROM client_scopes cs \
     WHERE cs.client_id = c.client_id) AS scopes FROM clients c";

/// Revokes every refresh and access token of a family (RFC 9700 §4.14.2).
async fn revoke_family(
    conn: &mut <$db as sqlx::Database>::Connection,
    family_id: &str,
    now: UnixTime,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(now.0)
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE access_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(now.0)
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes everything of a client but its id, secret and creation time,
/// scopes included (defining unknown ones with an empty description).
async fn write_client_settings(
    conn: &mut <$db as sqlx::Database>::Connection,
    client: &Client,
) -> StoreResult<()> {
    let grant_types: Vec<&str> = client.grant_types.iter().map(|g| g.as_str()).collect();
    let redirect_uris: Vec<String> = client
        .redirect_uris
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    let updated = sqlx::query(
        "UPDATE clients SET name = $1, grant_types = $2, redirect_uris = $3, audiences = $4, token_format = $5, \
         app_type = $6, access_token_ttl = $7, refresh_token_ttl = $8 WHERE client_id = $9 AND tenant_id = $10",
    )
    .bind(&client.name)
    .bind(grant_types.join(" "))
    .bind(to_json(&redirect_uris))
    .bind(to_json(&client.audiences))
    .bind(client.token_format.as_str())
    .bind(client.app_type.map(|t| t.as_str()))
    .bind(client.access_token_ttl)
    .bind(client.refresh_token_ttl)
    .bind(client.client_id.as_str())
    .bind(client.tenant_id.0)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM client_scopes WHERE client_id = $1")
        .bind(client.client_id.as_str())
        .execute(&mut *conn)
        .await?;
    for scope in client.scopes.iter() {
        sqlx::query(
            "INSERT INTO scopes (tenant_id, name, description) VALUES ($1, $2, '') \
             ON CONFLICT DO NOTHING",
        )
        .bind(client.tenant_id.0)
        .bind(scope.as_str())
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO client_scopes (client_id, tenant_id, scope) VALUES ($1, $2, $3)")
            .bind(client.client_id.as_str())
            .bind(client.tenant_id.0)
            .bind(scope.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts or replaces a tenant's branding.
async fn write_branding(
    conn: &mut <$db as sqlx::Database>::Connection,
    tenant: TenantId,
    branding: &Branding,
    version: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tenant_branding (tenant_id, display_name, accent_color, logo, logo_type, css, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id) DO UPDATE SET \
         display_name = excluded.display_name, accent_color = excluded.accent_color, logo = excluded.logo, \
         logo_type = excluded.logo_type, css = excluded.css, version = excluded.version",
    )
    .bind(tenant.0)
    .bind(&branding.display_name)
    .bind(&branding.accent_color)
    .bind(branding.logo.as_ref().map(|l| l.bytes.clone()))
    .bind(branding.logo.as_ref().map(|l| l.content_type))
    .bind(&branding.css)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_key(
    conn: &mut <$db as sqlx::Database>::Connection,
    tenant: TenantId,
    key: &SigningKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, tenant_id, private_pkcs8, public_jwk, created_at, retire_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(&key.kid)
    .bind(tenant.0)
    .bind(&key.private_pkcs8)
    .bind(&key.public_jwk)
    .bind(key.created_at.0)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for $store {
    async fn close(&self) {
        self.close_background_work().await;
        self.pool.close().await;
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn config_version(&self) -> StoreResult<i64> {
        // Each backend reads it its own fastest way.
        self.read_config_version().await
    }

    async fn purge_expired(&self, now: UnixTime) -> StoreResult<u64> {
        // Used codes are kept a day past expiry so that a late replay is still
        // recognised (and revokes what the code issued).
        let statements = [
            "DELETE FROM pending_authorizations WHERE expires_at <= $1",
            "DELETE FROM sessions WHERE expires_at <= $1",
            "DELETE FROM authorization_codes WHERE expires_at <= $1 - 86400",
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            "DELETE FROM access_tokens WHERE expires_at <= $1",
            // Counts whose window ended and whose lockout is over.
            "DELETE FROM login_throttle WHERE locked_until <= $1 AND window_start + 86400 <= $1",
        ];
        let mut purged = 0;
        for statement in statements {
            purged += sqlx::query(statement)
                .bind(now.0)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected();
        }
        Ok(purged)
    }

    async fn server_secret(
        &self,
        name: &str,
        generate: &(dyn Fn() -> Vec<u8> + Send + Sync),
    ) -> StoreResult<Vec<u8>> {
        let existing = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *self.write().await?)
            .await?;
        if let Some(row) = existing {
            return Ok(row.try_get("value")?);
        }
        // Another process may be creating it too: the first insert wins.
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(generate())
            .execute(&mut *self.write().await?)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *self.write().await?)
            .await?;
        Ok(row.try_get("value")?)
    }

    async fn replace_server_secret(&self, name: &str, value: &[u8]) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, tenant_id, private_pkcs8, public_jwk, created_at, retire_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(key.tenant_id.0)
        .bind(&key.private_pkcs8)
        .bind(&key.public_jwk)
        .bind(key.created_at.0)
        .bind(key.retire_at.map(|r| r.0))
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn create_tenant(
        &self,
        name: &TenantName,
        lifetimes: Lifetimes,
        first_key: SigningKeyRecord,
        now: UnixTime,
    ) -> StoreResult<Tenant> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let row = sqlx::query(
            "INSERT INTO tenants (name, access_token_ttl, refresh_token_ttl, authorization_code_ttl, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING *",
        )
        .bind(name.as_str())
        .bind(lifetimes.access_token)
        .bind(lifetimes.refresh_token)
        .bind(lifetimes.authorization_code)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await?;
        let tenant = tenant_from_row(&row)?;
        insert_key(&mut tx, tenant.id, &first_key).await?;
        tx.commit().await?;
        Ok(tenant)
    }

    async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn has_tenants(&self) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM tenants LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        sqlx::query("SELECT * FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn update_tenant(
        &self,
        tenant: TenantId,
        lifetimes: Lifetimes,
        settings: &TenantSettings,
        branding: Option<(&Branding, i64)>,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let updated = sqlx::query(
            "UPDATE tenants SET access_token_ttl = $1, refresh_token_ttl = $2, authorization_code_ttl = $3, \
             allow_implicit = $4 WHERE id = $5",
        )
        .bind(lifetimes.access_token)
        .bind(lifetimes.refresh_token)
        .bind(lifetimes.authorization_code)
        .bind(settings.allow_implicit)
        .bind(tenant.0)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if let Some((branding, version)) = branding {
            write_branding(&mut tx, tenant, branding, version).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_tenant_settings(
        &self,
        tenant: TenantId,
        settings: &TenantSettings,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET allow_implicit = $1 WHERE id = $2")
            .bind(settings.allow_implicit)
            .bind(tenant.0)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn delete_tenant(&self, name: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn branding(&self, tenant: TenantId) -> StoreResult<Branding> {
        let row = sqlx::query("SELECT * FROM tenant_branding WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(Branding::default());
        };
        let logo = match row.try_get::<Option<Vec<u8>>, _>("logo")? {
            // Re-detected from the bytes, which were checked on the way in.
            Some(bytes) => {
                Some(parse_logo(bytes).map_err(|e| StoreError::Internal(e.to_string()))?)
            }
            None => None,
        };
        Ok(Branding {
            display_name: row.try_get("display_name")?,
            accent_color: row.try_get("accent_color")?,
            logo,
            css: row.try_get("css")?,
        })
    }

    async fn branding_summary(&self, tenant: TenantId) -> StoreResult<Option<BrandingSummary>> {
        let row = sqlx::query(
            "SELECT display_name, logo IS NOT NULL AS has_logo, \
             (css IS NOT NULL OR accent_color IS NOT NULL) AS has_stylesheet, version \
             FROM tenant_branding WHERE tenant_id = $1",
        )
        .bind(tenant.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(BrandingSummary {
            display_name: row.try_get("display_name")?,
            has_logo: row.try_get("has_logo")?,
            has_stylesheet: row.try_get("has_stylesheet")?,
            version: row.try_get("version")?,
        }))
    }

    async fn put_branding(
        &self,
        tenant: TenantId,
        branding: &Branding,
        version: i64,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        write_branding(&mut conn, tenant, branding, version).await
    }

    async fn rotate_signing_key(
        &self,
        tenant: TenantId,
        new_key: SigningKeyRecord,
        retire_previous_at: UnixTime,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_at = $1 WHERE tenant_id = $2 AND retire_at IS NULL",
        )
        .bind(retire_previous_at.0)
        .bind(tenant.0)
        .execute(&mut *tx)
        .await?;
        insert_key(&mut tx, tenant, &new_key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn published_keys(
        &self,
        tenant: TenantId,
        now: UnixTime,
    ) -> StoreResult<Vec<SigningKeyRecord>> {
        sqlx::query(
            "SELECT * FROM signing_keys WHERE tenant_id = $1 AND (retire_at IS NULL OR retire_at > $2) \
             ORDER BY retire_at IS NOT NULL, created_at DESC, retire_at DESC, kid",
        )
        .bind(tenant.0)
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn put_scope(&self, tenant: TenantId, scope: &ScopeDefinition) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO scopes (tenant_id, name, description) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description",
        )
        .bind(tenant.0)
        .bind(scope.name.as_str())
        .bind(&scope.description)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn ensure_scope(&self, tenant: TenantId, scope: &Scope) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO scopes (tenant_id, name, description) VALUES ($1, $2, '') \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.0)
        .bind(scope.as_str())
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn list_scopes(&self, tenant: TenantId) -> StoreResult<Vec<ScopeDefinition>> {
        let rows =
            sqlx::query("SELECT name, description FROM scopes WHERE tenant_id = $1 ORDER BY name")
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                Ok(ScopeDefinition {
                    name: Scope::parse(&name).map_err(|e| StoreError::Internal(e.to_string()))?,
                    description: row.try_get("description")?,
                })
            })
            .collect()
    }

    async fn delete_scope(&self, tenant: TenantId, name: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM scopes WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0)
            .bind(name)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO clients (client_id, tenant_id, name, secret_hash, auth_method, grant_types, \
             redirect_uris, audiences, token_format, app_type, access_token_ttl, refresh_token_ttl, created_at) \
             VALUES ($1, $2, $3, $4, $5, '', '[]', '[]', 'jwt', NULL, NULL, NULL, $6)",
        )
        .bind(client.client_id.as_str())
        .bind(client.tenant_id.0)
        .bind(&client.name)
        .bind(client.secret_hash.as_ref().map(|h| h.0.clone()))
        .bind(client.auth_method.as_str())
        .bind(client.created_at.0)
        .execute(&mut *tx)
        .await?;
        write_client_settings(&mut tx, client).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_client(&self, client: &Client) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        write_client_settings(&mut tx, client).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn client(&self, tenant: TenantId, client_id: &str) -> StoreResult<Option<Client>> {
        sqlx::query(&format!(
            "{CLIENT_SELECT} WHERE c.tenant_id = $1 AND c.client_id = $2"
        ))
        .bind(tenant.0)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(client_from_row)
        .transpose()
    }

    async fn list_clients(&self, tenant: TenantId) -> StoreResult<Vec<Client>> {
        sqlx::query(&format!(
            "{CLIENT_SELECT} WHERE c.tenant_id = $1 ORDER BY c.created_at, c.name"
        ))
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(client_from_row)
        .collect()
    }

    async fn delete_client(&self, tenant: TenantId, client_id: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM clients WHERE tenant_id = $1 AND client_id = $2")
            .bind(tenant.0)
            .bind(client_id)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, username, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(user.tenant_id.0)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.created_at.0)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn user_by_username(
        &self,
        tenant: TenantId,
        username: &str,
    ) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND username = $2")
            .bind(tenant.0)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, tenant: TenantId, id: &str) -> StoreResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self, tenant: TenantId) -> StoreResult<Vec<User>> {
        sqlx::query("SELECT * FROM users WHERE tenant_id = $1 ORDER BY username")
            .bind(tenant.0)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn delete_user(&self, tenant: TenantId, username: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND username = $2")
            .bind(tenant.0)
            .bind(username)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn put_pending_authorization(&self, p: &PendingAuthorization) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pending_authorizations (id_hash, tenant_id, client_id, redirect_uri, \
             redirect_uri_in_request, scope, state, code_challenge, response_type, prompt, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&p.id_hash.0)
        .bind(p.tenant_id.0)
        .bind(p.client_id.as_str())
        .bind(p.redirect_uri.as_str())
        .bind(p.redirect_uri_in_request)
        .bind(p.scope.to_string())
        .bind(&p.state)
        .bind(p.code_challenge.as_ref().map(|c| c.as_str()))
        .bind(p.response_type.as_str())
        .bind(p.prompt.to_text())
        .bind(p.created_at.0)
        .bind(p.expires_at.0)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn pending_authorization(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        now: UnixTime,
    ) -> StoreResult<Option<PendingAuthorization>> {
        let row = sqlx::query(
            "SELECT * FROM pending_authorizations WHERE id_hash = $1 AND tenant_id = $2 AND expires_at > $3",
        )
        .bind(&id_hash.0)
        .bind(tenant.0)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PendingAuthorization {
            id_hash: SecretHash(row.try_get("id_hash")?),
            tenant_id: TenantId(row.try_get("tenant_id")?),
            client_id: ClientId::new(row.try_get::<String, _>("client_id")?),
            redirect_uri: RedirectUri::from_stored(row.try_get("redirect_uri")?),
            redirect_uri_in_request: row.try_get("redirect_uri_in_request")?,
            scope: scope_set(&row.try_get::<String, _>("scope")?),
            state: row.try_get("state")?,
            code_challenge: row
                .try_get::<Option<String>, _>("code_challenge")?
                .map(CodeChallenge::from_stored),
            response_type: ResponseType::parse(&row.try_get::<String, _>("response_type")?)
                .ok_or_else(|| StoreError::Internal("unknown response_type".into()))?,
            prompt: Prompt::parse(Some(&row.try_get::<String, _>("prompt")?))
                .map_err(|_| StoreError::Internal("invalid stored prompt".into()))?,
            created_at: UnixTime(row.try_get("created_at")?),
            expires_at: UnixTime(row.try_get("expires_at")?),
        }))
    }

    async fn take_pending_authorization(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
    ) -> StoreResult<bool> {
        let result =
            sqlx::query("DELETE FROM pending_authorizations WHERE id_hash = $1 AND tenant_id = $2")
                .bind(&id_hash.0)
                .bind(tenant.0)
                .execute(&mut *self.write().await?)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (id_hash, tenant_id, user_id, auth_time, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&s.id_hash.0)
            .bind(s.tenant_id.0)
            .bind(&s.user_id)
            .bind(s.auth_time.0)
            .bind(s.expires_at.0)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn session(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        now: UnixTime,
    ) -> StoreResult<Option<Session>> {
        let row = sqlx::query(
            "SELECT * FROM sessions WHERE id_hash = $1 AND tenant_id = $2 AND expires_at > $3",
        )
        .bind(&id_hash.0)
        .bind(tenant.0)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Session {
            id_hash: SecretHash(row.try_get("id_hash")?),
            tenant_id: TenantId(row.try_get("tenant_id")?),
            user_id: row.try_get("user_id")?,
            auth_time: UnixTime(row.try_get("auth_time")?),
            expires_at: UnixTime(row.try_get("expires_at")?),
        }))
    }

    async fn locked_until(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
    ) -> StoreResult<Option<UnixTime>> {
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT locked_until FROM login_throttle WHERE tenant_id = $1 AND key = $2 AND locked_until > $3",
        )
        .bind(tenant.0)
        .bind(key)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(until.map(UnixTime))
    }

    async fn record_failure(
        &self,
        tenant: TenantId,
        key: &str,
        now: UnixTime,
        window_start: UnixTime,
    ) -> StoreResult<i64> {
        // One statement, so concurrent failures are all counted.
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO login_throttle (tenant_id, key, failures, window_start) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET \
               failures = CASE WHEN login_throttle.window_start <= $4 THEN 1 \
                 ELSE login_throttle.failures + 1 END, \
               window_start = CASE WHEN login_throttle.window_start <= $4 THEN excluded.window_start \
                 ELSE login_throttle.window_start END \
             RETURNING failures",
        )
        .bind(tenant.0)
        .bind(key)
        .bind(now.0)
        .bind(window_start.0)
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok(failures)
    }

    async fn lock_out(&self, tenant: TenantId, key: &str, until: UnixTime) -> StoreResult<()> {
        sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE tenant_id = $2 AND key = $3")
            .bind(until.0)
            .bind(tenant.0)
            .bind(key)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn clear_failures(&self, tenant: TenantId, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_throttle WHERE tenant_id = $1 AND key = $2")
            .bind(tenant.0)
            .bind(key)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn set_pending_prompt(
        &self,
        tenant: TenantId,
        id_hash: &SecretHash,
        prompt: Prompt,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pending_authorizations SET prompt = $1 WHERE id_hash = $2 AND tenant_id = $3",
        )
        .bind(prompt.to_text())
        .bind(&id_hash.0)
        .bind(tenant.0)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn delete_session(&self, tenant: TenantId, id_hash: &SecretHash) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1 AND tenant_id = $2")
            .bind(&id_hash.0)
            .bind(tenant.0)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    async fn consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
    ) -> StoreResult<Option<Consent>> {
        sqlx::query(&format!(
            "{CONSENT_SELECT} AND co.user_id = $2 AND co.client_id = $3"
        ))
        .bind(tenant.0)
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(consent_from_row)
        .transpose()
    }

    async fn put_consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
        scope: &ScopeSet,
        now: UnixTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO consents (tenant_id, user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
        )
        .bind(tenant.0)
        .bind(user_id)
        .bind(client_id)
        .bind(scope.to_string())
        .bind(now.0)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn list_consents(&self, tenant: TenantId, user_id: &str) -> StoreResult<Vec<Consent>> {
        sqlx::query(&format!(
            "{CONSENT_SELECT} AND co.user_id = $2 ORDER BY c.name"
        ))
        .bind(tenant.0)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(consent_from_row)
        .collect()
    }

    async fn revoke_consent(
        &self,
        tenant: TenantId,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let removed = sqlx::query(
            "DELETE FROM consents WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3",
        )
        .bind(tenant.0)
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        // RFC 7009 §2.1: withdrawing the grant takes what belongs to it,
        // including a code not yet redeemed, which must never be exchanged
        // afterwards. Used codes stay, so that a late replay is still
        // recognised (RFC 6749 §4.1.2).
        sqlx::query(
            "DELETE FROM authorization_codes \
             WHERE tenant_id = $1 AND user_id = $2 AND client_id = $3 AND used_at IS NULL",
        )
        .bind(tenant.0)
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        for table in ["refresh_tokens", "access_tokens"] {
            sqlx::query(&format!(
                "UPDATE {table} SET revoked_at = $1 \
                 WHERE tenant_id = $2 AND user_id = $3 AND client_id = $4 AND revoked_at IS NULL"
            ))
            .bind(now.0)
            .bind(tenant.0)
            .bind(user_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(removed.rows_affected() > 0)
    }

    async fn put_authorization_code(&self, c: &AuthorizationCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, tenant_id, client_id, user_id, redirect_uri, \
             redirect_uri_in_request, scope, code_challenge, auth_time, expires_at, family_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&c.code_hash.0)
        .bind(c.tenant_id.0)
        .bind(c.client_id.as_str())
        .bind(&c.user_id)
        .bind(c.redirect_uri.as_str())
        .bind(c.redirect_uri_in_request)
        .bind(c.scope.to_string())
        .bind(c.code_challenge.as_ref().map(|x| x.as_str()))
        .bind(c.auth_time.0)
        .bind(c.expires_at.0)
        .bind(&c.family_id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    async fn redeem_authorization_code(
        &self,
        tenant: TenantId,
        code_hash: &SecretHash,
        now: UnixTime,
        decide: DecideIssue,
    ) -> StoreResult<CodeRedemption> {
        let work = Work::Redeem {
            tenant,
            code_hash: code_hash.clone(),
            now,
            decide,
        };
        match self.group_write(work).await? {
            Done::Redemption(redemption) => Ok(redemption),
            _ => Err(StoreError::Internal(
                "a redemption was answered with something else".into(),
            )),
        }
    }

    async fn put_refresh_token(&self, t: &RefreshTokenRecord) -> StoreResult<()> {
        insert_refresh(&mut *self.write().await?, t).await
    }

    async fn refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        self.read_refresh_token(tenant, token_hash).await
    }

    async fn rotate_refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
        now: UnixTime,
        decide: DecideSuccessor,
    ) -> StoreResult<Rotation> {
        let work = Work::Rotate {
            tenant,
            token_hash: token_hash.clone(),
            now,
            decide,
        };
        match self.group_write(work).await? {
            Done::Rotation(rotation) => Ok(rotation),
            _ => Err(StoreError::Internal(
                "a rotation was answered with something else".into(),
            )),
        }
    }

    async fn put_tokens(
        &self,
        access: Option<&AccessTokenRecord>,
        refresh: Option<&RefreshTokenRecord>,
    ) -> StoreResult<()> {
        if access.is_none() && refresh.is_none() {
            return Ok(());
        }
        let work = Work::Tokens {
            access: access.cloned(),
            refresh: refresh.cloned(),
        };
        self.group_write(work).await.map(|_| ())
    }

    async fn put_access_token(&self, t: &AccessTokenRecord) -> StoreResult<()> {
        self.put_tokens(Some(t), None).await
    }

    async fn access_token_by_hash(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.read_access_token_by_hash(tenant, token_hash).await
    }

    async fn access_token_by_jti(
        &self,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.read_access_token_by_jti(tenant, jti).await
    }

    async fn revoke_access_token(&self, t: &AccessTokenRecord, now: UnixTime) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let updated = sqlx::query(
            "UPDATE access_tokens SET revoked_at = coalesce(revoked_at, $1) WHERE jti = $2 AND tenant_id = $3",
        )
        .bind(now.0)
        .bind(&t.jti)
        .bind(t.tenant_id.0)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Another node may record the same revocation at the same time:
            // the insert then does nothing.
            insert_access(&mut *tx, t, Some(now)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_family(
        &self,
        tenant: TenantId,
        family_id: &str,
        now: UnixTime,
    ) -> StoreResult<()> {
        let mut conn = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        // The family id is random and global; the tenant check is belt and braces.
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM refresh_tokens WHERE family_id = $1 AND tenant_id = $2 \
             UNION SELECT 1 FROM access_tokens WHERE family_id = $1 AND tenant_id = $2 LIMIT 1",
        )
        .bind(family_id)
        .bind(tenant.0)
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_some() {
            revoke_family(&mut tx, family_id, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_access<'e, E>(
    executor: E,
    t: &AccessTokenRecord,
    revoked_at: Option<UnixTime>,
) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = $db>,
{
    sqlx::query(
        "INSERT INTO access_tokens (jti, token_hash, tenant_id, client_id, user_id, scope, audiences, \
         auth_time, issued_at, expires_at, family_id, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(&t.jti)
    .bind(t.token_hash.as_ref().map(|h| h.0.clone()))
    .bind(t.tenant_id.0)
    .bind(t.client_id.as_str())
    .bind(&t.user_id)
    .bind(t.scope.to_string())
    .bind(to_json(&t.audiences))
    .bind(t.auth_time.map(|a| a.0))
    .bind(t.issued_at.0)
    .bind(t.expires_at.0)
    .bind(&t.family_id)
    .bind(revoked_at.map(|r| r.0))
    .execute(executor)
    .await?;
    Ok(())
}

async fn insert_refresh<'e, E>(executor: E, t: &RefreshTokenRecord) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = $db>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, client_id, user_id, scope, \
         auth_time, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&t.token_hash.0)
    .bind(&t.family_id)
    .bind(t.tenant_id.0)
    .bind(t.client_id.as_str())
    .bind(&t.user_id)
    .bind(t.scope.to_string())
    .bind(t.auth_time.map(|a| a.0))
    .bind(t.issued_at.0)
    .bind(t.expires_at.0)
    .execute(executor)
    .await?;
    Ok(())
}
    };
}

pub(crate) use sql_store;
