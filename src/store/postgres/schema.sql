-- recordhook shared store (PostgreSQL), schema version 1. Same tables and meaning as the
-- embedded store's schema.sql; times are milliseconds since the Unix epoch, taken from
-- the database's clock so that replicas whose clocks differ still agree on what is due.
-- Run under an advisory lock at start-up (see postgres.rs), so replicas starting at once
-- do not race each other's CREATEs.

-- One row per accepted callback. (recording_sid, recording_status) is the dedupe key.
CREATE TABLE IF NOT EXISTS events (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text NOT NULL,
    recording_sid    text NOT NULL,
    recording_status text NOT NULL,
    received_at      bigint NOT NULL,
    -- A late in-progress stored after a final status: queued nowhere.
    superseded       boolean NOT NULL DEFAULT false,
    payload          text NOT NULL,
    UNIQUE (recording_sid, recording_status)
);

-- One row per (event, matching handler).
-- state: 'pending' (waiting or leased), 'delivered', 'dead'.
-- A claimed delivery stays 'pending' with leased = true and due_at = lease expiry, so an
-- expired lease (a replica that died) makes it due again without any sweeper.
CREATE TABLE IF NOT EXISTS deliveries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq  bigint NOT NULL REFERENCES events (seq),
    handler    text NOT NULL,
    state      text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    due_at     bigint NOT NULL,
    leased     boolean NOT NULL DEFAULT false,
    last_error text,
    updated_at bigint NOT NULL
);
-- Partial indexes: only work still to do (or dead) is indexed.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (handler, due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (handler) WHERE state = 'dead';
-- Retention (does the event still have deliveries?) and the foreign key's check when an
-- event is deleted.
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);

-- Authentic callbacks that failed validation.
CREATE TABLE IF NOT EXISTS quarantine (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at bigint NOT NULL,
    fields      text NOT NULL,
    errors      text NOT NULL
);

-- Written by readiness probes: proves this replica can commit (not only read: a
-- connection that landed on a read-only standby after a failover fails it).
CREATE TABLE IF NOT EXISTS heartbeat (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint NOT NULL
);
