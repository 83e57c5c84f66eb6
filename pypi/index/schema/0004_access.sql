-- Private packages (issue 11): project visibility, reader roles (in roles.role),
-- and scoped, expiring, revocable API tokens.

-- A project listed here is private: readable only by its owners, maintainers and readers.
CREATE TABLE private_projects (
    project_id INTEGER PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE
);

-- Space-separated scopes (upload:NAME, upload, read:NAME, read); '' = unscoped (every right).
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN expires TEXT;
ALTER TABLE api_tokens ADD COLUMN revoked TEXT;
