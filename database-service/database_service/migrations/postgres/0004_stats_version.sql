-- A number every new trade raises in its own transaction: the key under which statistics
-- are cached, so every worker and instance sees a new trade at once (a per-process cache
-- generation could not), whatever cache is in use.
CREATE TABLE IF NOT EXISTS stats_version (
    id integer PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO stats_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
