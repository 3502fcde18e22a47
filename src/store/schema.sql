-- recordhook embedded store, schema version 1.

-- One row per accepted callback. (recording_sid, recording_status) is the dedupe key.
CREATE TABLE IF NOT EXISTS events (
    id               TEXT PRIMARY KEY,
    recording_sid    TEXT NOT NULL,
    recording_status TEXT NOT NULL,
    received_at      INTEGER NOT NULL,
    -- 1 for a late in-progress stored after a final status: queued nowhere.
    superseded       INTEGER NOT NULL DEFAULT 0,
    payload          TEXT NOT NULL,
    UNIQUE (recording_sid, recording_status)
);

-- One row per (event, matching handler).
-- state: 'pending' (waiting or leased), 'delivered', 'dead'.
-- A claimed delivery stays 'pending' with leased = 1 and due_at = lease expiry, so an
-- expired lease makes it due again without any sweeper.
CREATE TABLE IF NOT EXISTS deliveries (
    id         INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL REFERENCES events (id),
    handler    TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    due_at     INTEGER NOT NULL,
    leased     INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (handler, state, due_at);

-- Authentic callbacks that failed validation.
CREATE TABLE IF NOT EXISTS quarantine (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    fields      TEXT NOT NULL,
    errors      TEXT NOT NULL
);

-- Written by readiness probes: proves a commit can reach the disk.
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
