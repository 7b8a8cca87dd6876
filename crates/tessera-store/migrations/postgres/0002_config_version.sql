-- A counter bumped by every change to what the server caches (tenants, keys,
-- scopes, clients), by whoever makes it: a node, the CLI, another node.
-- Each node reads it once per request and drops its cache when it moved.

CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);

CREATE FUNCTION config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_config AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION config_changed();

CREATE TRIGGER signing_keys_config AFTER INSERT OR UPDATE OR DELETE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION config_changed();

CREATE TRIGGER scopes_config AFTER INSERT OR UPDATE OR DELETE ON scopes
    FOR EACH STATEMENT EXECUTE FUNCTION config_changed();

CREATE TRIGGER clients_config AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION config_changed();

CREATE TRIGGER client_scopes_config AFTER INSERT OR UPDATE OR DELETE ON client_scopes
    FOR EACH STATEMENT EXECUTE FUNCTION config_changed();
