-- The first schema. {id} is the dialect's auto-increment primary key;
-- timestamps are ISO-8601 UTC text so both dialects compare them alike.

CREATE TABLE users (
    id {id},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    email TEXT NOT NULL DEFAULT '',
    is_active INTEGER NOT NULL DEFAULT 1,
    created TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id {id},
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    last_used TEXT
);

CREATE TABLE projects (
    id {id},
    name TEXT NOT NULL,
    normalized_name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    last_serial INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE roles (
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE releases (
    id {id},
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    canonical_version TEXT NOT NULL,
    created TEXT NOT NULL,
    yanked INTEGER NOT NULL DEFAULT 0,
    yanked_reason TEXT NOT NULL DEFAULT '',
    metadata_version TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    description_content_type TEXT NOT NULL DEFAULT '',
    author TEXT NOT NULL DEFAULT '',
    author_email TEXT NOT NULL DEFAULT '',
    maintainer TEXT NOT NULL DEFAULT '',
    maintainer_email TEXT NOT NULL DEFAULT '',
    license TEXT NOT NULL DEFAULT '',
    keywords TEXT NOT NULL DEFAULT '',
    home_page TEXT NOT NULL DEFAULT '',
    download_url TEXT NOT NULL DEFAULT '',
    requires_python TEXT NOT NULL DEFAULT '',
    platform TEXT NOT NULL DEFAULT '',
    classifiers TEXT NOT NULL DEFAULT '[]',
    requires_dist TEXT NOT NULL DEFAULT '[]',
    provides_extra TEXT NOT NULL DEFAULT '[]',
    project_urls TEXT NOT NULL DEFAULT '{}',
    UNIQUE (project_id, canonical_version)
);

CREATE TABLE files (
    id {id},
    release_id INTEGER NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    filename TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    md5_digest TEXT NOT NULL,
    sha256_digest TEXT NOT NULL,
    blake2_256_digest TEXT NOT NULL,
    packagetype TEXT NOT NULL,
    python_version TEXT NOT NULL DEFAULT '',
    requires_python TEXT NOT NULL DEFAULT '',
    comment_text TEXT NOT NULL DEFAULT '',
    metadata_sha256 TEXT,
    upload_time TEXT NOT NULL,
    uploaded_via TEXT NOT NULL DEFAULT '',
    uploaded_by INTEGER REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX files_release ON files (release_id);

-- Every filename ever used, so a deleted file's name is never reused (as pypi.org).
CREATE TABLE file_registry (
    filename TEXT PRIMARY KEY
);

-- The journal: its ids are the serials (X-PyPI-Last-Serial, XML-RPC changelog).
CREATE TABLE journal (
    id {id},
    name TEXT NOT NULL,
    version TEXT,
    action TEXT NOT NULL,
    submitted_date TEXT NOT NULL,
    submitted_by TEXT
);
CREATE INDEX journal_name ON journal (name);

-- CDN purges written in the same transaction as the change, sent after commit.
CREATE TABLE purge_outbox (
    id {id},
    purge_key TEXT NOT NULL,
    paths TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX purge_outbox_due ON purge_outbox (next_attempt);
