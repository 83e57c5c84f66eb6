"""The index's data.

Database access and schema migrations (db, schema/), projects and releases
(packages), users and roles (auth), the journal of serials (journal), the purge
outbox (outbox), facts about stored objects (objects), surrogate keys
(cache_keys) and the render cache (render_cache).
"""
