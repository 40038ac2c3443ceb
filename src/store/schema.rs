//! The schema as an ordered list of migration steps. Step `i` (0-based) takes
//! a database from `PRAGMA user_version` `i` to `i + 1`. Steps are append-only:
//! a step that has shipped is never edited, because databases in the field
//! already carry its result. To change the schema, add one string at the end.

/// Version 1: licenses (current and history), the clock mark, settings.
const V1: &str = "
CREATE TABLE licenses (
    id           INTEGER PRIMARY KEY,
    license_id   TEXT    NOT NULL,
    armored      TEXT    NOT NULL,
    installed_at INTEGER NOT NULL,
    replaced_at  INTEGER NULL,
    current      INTEGER NOT NULL DEFAULT 0 CHECK (current IN (0, 1))
);
-- At most one row may be current: a second `current = 1` row violates this
-- index, so a bug in the install path fails loudly instead of leaving two
-- licenses in force.
CREATE UNIQUE INDEX licenses_one_current ON licenses(current) WHERE current = 1;

-- One row (id = 1), upserted; the CHECK keeps it single.
CREATE TABLE clock_mark (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    high_water INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 2: PBX users, the profile and add-ons each holds, and the audit
/// of every change to them (see docs/seats.md).
const V2: &str = "
CREATE TABLE users (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    extension   TEXT    NOT NULL UNIQUE,
    number      TEXT    NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('regular', 'admin', 'virtual')),
    -- The base profile and the sequence number of the change that gave it:
    -- the allocation order when seats are short. Both or neither.
    profile     TEXT    NULL,
    profile_seq INTEGER NULL,
    CHECK ((profile IS NULL) = (profile_seq IS NULL))
);
-- The admin is never counted, so there may be only one.
CREATE UNIQUE INDEX users_one_admin ON users(kind) WHERE kind = 'admin';

CREATE TABLE user_addons (
    user_id TEXT    NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code    TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (user_id, code)
) WITHOUT ROWID;

-- Append-only. AUTOINCREMENT: ids are never reused, even after old rows
-- are pruned, so an id names one change for good.
CREATE TABLE seat_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    caller_uid INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    before     TEXT    NULL,  -- JSON snapshot of the user, NULL on create
    after      TEXT    NULL,  -- JSON snapshot of the user, NULL on delete
    totals     TEXT    NOT NULL  -- JSON: code -> {used, purchased}
);
CREATE INDEX seat_audit_user ON seat_audit(user_id, id);
";

/// Version 3: test mode sessions, kept for the audit and reported to the
/// portal at the next refresh (`reported` flips to 1 once it took them).
const V3: &str = "
CREATE TABLE test_sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    ended_at    INTEGER NULL,   -- NULL while it runs
    how         TEXT    NULL,   -- ran_out or stopped
    reported    INTEGER NOT NULL DEFAULT 0
);
";

/// Every step, oldest first. The schema version this build knows is the length.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];
