-- Whole-index pages (/simple/, XML-RPC list_packages) kept as sorted segments (pypi.index.segmented):
-- a change re-renders the few segments whose name ranges it touches, not 600,000 names.
-- ``lo`` is the first normalized name of the segment's range ('' for the first segment);
-- ``deflate`` is the raw, sync-flushed deflate stream of the segment's entries (segments concatenate into one
-- gzip member); ``crc`` its CRC-32, ``length`` its size, ``version`` the page version it was
-- rendered at.
CREATE TABLE stored_segments (
    page TEXT NOT NULL,
    lo TEXT NOT NULL,
    version BIGINT NOT NULL,
    etag TEXT NOT NULL,
    length BIGINT NOT NULL,
    crc BIGINT NOT NULL,
    entries INTEGER NOT NULL,
    deflate {blob} NOT NULL,
    PRIMARY KEY (page, lo)
);

-- The version of the name lists, for every reader and for those from whom private projects are
-- hidden: the newest entry that added, removed, hid or showed a name.
DROP INDEX journal_name_set;
CREATE INDEX journal_names ON journal (id)
    WHERE action IN ('create', 'remove project', 'visibility private', 'visibility public');

-- The whole-index pages stored whole before (tens of MB each) are not read any more.
DELETE FROM stored_pages WHERE page LIKE 'simple-index/%' OR page LIKE 'xmlrpc/%';
