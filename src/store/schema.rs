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

/// Every step, oldest first. The schema version this build knows is the length.
pub(super) const MIGRATIONS: &[&str] = &[V1];
