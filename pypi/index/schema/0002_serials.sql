-- Serials in commit order. One row holds the newest serial handed out; a
-- transaction that records changes raises it just before COMMIT (on PostgreSQL
-- the row lock queues such transactions, so serials grow in the order changes
-- become visible). The journal's ids are these serials from now on.
CREATE TABLE serials (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO serials (id, value) SELECT 1, COALESCE(MAX(id), 0) FROM journal;
