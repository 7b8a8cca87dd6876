-- A counter bumped by every change to what the server caches (tenants, keys,
-- scopes, clients), by whoever makes it: the server, the CLI, another node.
-- The server reads it once per request and drops its cache when it moved.

CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);

CREATE TRIGGER tenants_insert_config AFTER INSERT ON tenants
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER tenants_update_config AFTER UPDATE ON tenants
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER tenants_delete_config AFTER DELETE ON tenants
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER signing_keys_insert_config AFTER INSERT ON signing_keys
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER signing_keys_update_config AFTER UPDATE ON signing_keys
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER signing_keys_delete_config AFTER DELETE ON signing_keys
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER scopes_insert_config AFTER INSERT ON scopes
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER scopes_update_config AFTER UPDATE ON scopes
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER scopes_delete_config AFTER DELETE ON scopes
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER clients_insert_config AFTER INSERT ON clients
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER clients_update_config AFTER UPDATE ON clients
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER clients_delete_config AFTER DELETE ON clients
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER client_scopes_insert_config AFTER INSERT ON client_scopes
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER client_scopes_update_config AFTER UPDATE ON client_scopes
BEGIN UPDATE config_version SET version = version + 1; END;

CREATE TRIGGER client_scopes_delete_config AFTER DELETE ON client_scopes
BEGIN UPDATE config_version SET version = version + 1; END;
