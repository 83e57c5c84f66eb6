-- Issue 12: indexes for every hot query at pypi.org's size, and rendered pages shared by every process.

-- (journal.touch_project's "UPDATE projects ... WHERE normalized_name = ?" uses the UNIQUE index.)
-- Search: a prefix match on the normalized name (LIKE 'q%'), whatever the database's collation.
CREATE INDEX projects_name_prefix ON projects (normalized_name{pattern_ops});
-- The version of the set of names (/simple/ HTML): the newest entry that added or removed a name.
CREATE INDEX journal_name_set ON journal (id) WHERE action IN ('create', 'remove project');

-- fsck and migrate-storage walk the files in code-point order of path (as stores list them), in pages.
CREATE INDEX files_path_c ON files (path{collate_c});

-- Pages rendered once for the whole deployment (/simple/, large project pages), with their
-- gzip form. ``version`` is what the page depends on (the name set, a project's serial);
-- ``body`` is empty for the pages kept only gzip-compressed (``size`` is their length).
CREATE TABLE stored_pages (
    page TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    etag TEXT NOT NULL,
    body {blob} NOT NULL,
    gzip_body {blob} NOT NULL,
    rendered TEXT NOT NULL,
    size BIGINT NOT NULL
);
