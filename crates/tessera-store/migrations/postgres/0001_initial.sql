-- Tessera's schema on PostgreSQL: the same tables as on SQLite (see
-- ../sqlite), in PostgreSQL's types. Times are Unix seconds; secrets are stored
-- only as keyed hashes (BYTEA).

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE tenants (
    id                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    access_token_ttl       BIGINT NOT NULL,
    refresh_token_ttl      BIGINT NOT NULL,
    authorization_code_ttl BIGINT NOT NULL,
    allow_implicit         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at             BIGINT NOT NULL
);

-- A tenant's own look (see tessera_core::branding).
CREATE TABLE tenant_branding (
    tenant_id     BIGINT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    display_name  TEXT,
    accent_color  TEXT,
    logo          BYTEA,
    logo_type     TEXT,
    css           TEXT,
    version       BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    private_pkcs8 BYTEA NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    retire_at     BIGINT
);
CREATE INDEX signing_keys_tenant ON signing_keys(tenant_id);

CREATE TABLE scopes (
    tenant_id   BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    secret_hash   BYTEA,
    auth_method   TEXT NOT NULL,
    grant_types   TEXT NOT NULL,   -- space-separated
    redirect_uris TEXT NOT NULL,   -- JSON array
    audiences     TEXT NOT NULL,   -- JSON array
    token_format  TEXT NOT NULL,
    app_type      TEXT,           -- web, spa, native, m2m, or NULL
    access_token_ttl  BIGINT,    -- overrides of the tenant's lifetimes
    refresh_token_ttl BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX clients_tenant ON clients(tenant_id);

-- The scopes a client may be granted; deleting a scope removes it here too.
CREATE TABLE client_scopes (
    client_id TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    tenant_id BIGINT NOT NULL,
    scope     TEXT NOT NULL,
    PRIMARY KEY (client_id, scope),
    FOREIGN KEY (tenant_id, scope) REFERENCES scopes(tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE pending_authorizations (
    id_hash                 BYTEA PRIMARY KEY,
    tenant_id               BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id               TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    redirect_uri            TEXT NOT NULL,
    redirect_uri_in_request BOOLEAN NOT NULL,
    scope                   TEXT NOT NULL,
    state                   TEXT,
    code_challenge          TEXT,
    response_type           TEXT NOT NULL,
    prompt                  TEXT NOT NULL,
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL
);

-- What a user has allowed a client, so later requests need not ask again.
CREATE TABLE consents (
    tenant_id  BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE sessions (
    id_hash    BYTEA PRIMARY KEY,
    tenant_id  BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    auth_time  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Failed password attempts per key ("user-at-address" or "address").
CREATE TABLE login_throttle (
    tenant_id    BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE authorization_codes (
    code_hash               BYTEA PRIMARY KEY,
    tenant_id               BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id               TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    user_id                 TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri            TEXT NOT NULL,
    redirect_uri_in_request BOOLEAN NOT NULL,
    scope                   TEXT NOT NULL,
    code_challenge          TEXT,
    auth_time               BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    family_id               TEXT NOT NULL,
    used_at                 BIGINT
);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    family_id  TEXT NOT NULL,
    tenant_id  BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    user_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    auth_time  BIGINT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
CREATE INDEX refresh_tokens_user_client ON refresh_tokens(user_id, client_id);

-- Access tokens Tessera must be able to find again: every opaque token (by
-- its hash), and JWTs issued under a grant family or revoked by `jti` (the
-- revocation list; a row is kept until the token's expiry).
CREATE TABLE access_tokens (
    jti        TEXT PRIMARY KEY,
    token_hash BYTEA UNIQUE,
    tenant_id  BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients(client_id) ON DELETE CASCADE,
    user_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    audiences  TEXT NOT NULL,
    auth_time  BIGINT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    family_id  TEXT,
    revoked_at BIGINT
);
CREATE INDEX access_tokens_family ON access_tokens(family_id);
CREATE INDEX access_tokens_user_client ON access_tokens(user_id, client_id);
