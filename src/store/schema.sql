-- recordhook embedded store, schema version 1.

-- One row per accepted callback. (recording_sid, recording_status) is the dedupe key.
-- `seq` (the rowid) is the internal key deliveries point at; `id` is the public event id
-- (a UUIDv7) and needs no index of its own: every lookup goes through seq or the dedupe key.
CREATE TABLE IF NOT EXISTS events (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL,
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
    event_seq  INTEGER NOT NULL REFERENCES events (seq),
    handler    TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    due_at     INTEGER NOT NULL,
    leased     INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
-- Partial indexes: only rows that are still to be done (or dead) are indexed, so a
-- delivery leaving the queue costs one index removal and delivered history costs no
-- index space at all.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (handler, due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (handler) WHERE state = 'dead';
-- Retention: finds whether an event still has deliveries. (Created by every start, so
-- databases made before it get it too.)
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);

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
