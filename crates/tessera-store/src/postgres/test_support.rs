//! What the PostgreSQL backend's unit tests share: a schema of their own
//! and records to store in it.

use sqlx::PgPool;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord};

/// A schema of its own on the test server (`TESSERA_TEST_POSTGRES_URL`, by
/// default the local one every development and CI machine runs), migrated,
/// with tenant 1, its client `client` and its user `user`.
pub(crate) struct Schema {
    admin: String,
    name: String,
    /// The URL of the schema, for a store of its own.
    pub(crate) url: String,
    pub(crate) pool: PgPool,
}

impl Schema {
    pub(crate) async fn new() -> Schema {
        let admin = std::env::var("TESSERA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("test_pg_{}_{nanos}", std::process::id());
        let pool = PgPool::connect(&admin)
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (see README)");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&pool)
            .await
            .unwrap();
        let url = format!("{admin}?options=-c%20search_path%3D{name}");
        let store = crate::PostgresStore::connect(&url, &crate::PoolSettings::default())
            .await
            .unwrap();
        execute_all(
            &store.pool,
            &[
                "INSERT INTO tenants (name, access_token_ttl, refresh_token_ttl, \
             authorization_code_ttl, created_at) VALUES ('t', 60, 60, 60, 0)",
                "INSERT INTO clients (client_id, tenant_id, name, auth_method, grant_types, \
             redirect_uris, audiences, token_format, created_at) \
             SELECT 'client', id, 'c', 'none', '', '[]', '[]', 'opaque', 0 FROM tenants",
                "INSERT INTO users (id, tenant_id, username, password_hash, created_at) \
             SELECT 'user', id, 'u', 'x', 0 FROM tenants",
            ],
        )
        .await;
        Schema {
            admin,
            name,
            url,
            pool: store.pool,
        }
    }

    /// Runs `statements` in order on the schema.
    pub(crate) async fn execute_all(&self, statements: &[&str]) {
        execute_all(&self.pool, statements).await;
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Stores `access` and `refresh` as a new grant would.
    pub(crate) async fn store(
        &self,
        access: Option<AccessTokenRecord>,
        refresh: Option<RefreshTokenRecord>,
    ) {
        if let Some(access) = &access {
            super::insert_access(&self.pool, access, None)
                .await
                .unwrap();
        }
        if let Some(refresh) = &refresh {
            super::insert_refresh(&self.pool, refresh).await.unwrap();
        }
    }

    /// Stores an unused code with hash `[n; 32]` that starts `family`.
    pub(crate) async fn code(&self, n: u8, family: &str) {
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, tenant_id, client_id, user_id, \
             redirect_uri, redirect_uri_in_request, scope, auth_time, expires_at, family_id) \
             VALUES ($1, 1, 'client', 'user', 'https://app/cb', TRUE, 'read', 1, 1000, $2)",
        )
        .bind(vec![n; 32])
        .bind(family)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    pub(crate) async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&self.admin).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&admin)
            .await
            .unwrap();
    }
}

async fn execute_all(pool: &PgPool, statements: &[&str]) {
    for statement in statements {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}
