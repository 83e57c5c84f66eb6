-- Mirror and proxy of an upstream index (issue 10).
-- projects.origin: local (uploaded here), mirror (copied by `cloudpypi mirror`),
-- proxy (answered from upstream on demand). upstream_serial: upstream's
-- last serial of the project when it was last synced (0: unknown).
ALTER TABLE projects ADD COLUMN origin TEXT NOT NULL DEFAULT 'local';
ALTER TABLE projects ADD COLUMN upstream_serial BIGINT NOT NULL DEFAULT 0;

-- files.upstream_url: where a mirrored or proxied file came from (NULL: uploaded here).
-- files.stored: 0 while a proxied file's object is not fetched yet.
ALTER TABLE files ADD COLUMN upstream_url TEXT;
ALTER TABLE files ADD COLUMN stored INTEGER NOT NULL DEFAULT 1;
ALTER TABLE files ADD COLUMN upstream_metadata_url TEXT;

-- The last answer upstream gave for a project page, shared by every worker:
-- status 200 (found) or 404 (upstream has no such project); fetched is epoch seconds.
CREATE TABLE upstream_pages (
    normalized_name TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    fetched DOUBLE PRECISION NOT NULL,
    last_good DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- Mirror state per upstream URL: the last upstream serial fully synced, and a digest
-- of the settings that choose what is taken (a change makes the next run a full one).
CREATE TABLE upstream_state (
    upstream TEXT PRIMARY KEY,
    last_serial BIGINT NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL
);
