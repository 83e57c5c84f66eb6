-- fsck and migrate-storage walk every file row in code-point order of path. Through
-- files_path_c each row cost a read of a table page at random (6,000,000 files: minutes);
-- this index holds every column the walk reads, so PostgreSQL answers from the index alone
-- (an index-only scan). {include} is ") INCLUDE (" on PostgreSQL and ", " on SQLite, whose
-- index on all the columns covers the walk the same way.
DROP INDEX files_path_c;
CREATE INDEX files_objects ON files (path{collate_c}{include}filename, size, sha256_digest, metadata_sha256, release_id);
