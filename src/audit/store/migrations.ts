/**
 * Numbered schema migrations of the audit log's SQLite file, applied in order
 * at open inside one transaction and recorded in `schema_migrations`. Never
 * edit a released migration: append one.
 *
 * `audit_events.event` holds the exact bytes that are chained and hashed (the
 * event's RFC 8785 form, UTF-8); `time_ms`, `type`, `actor` and `task_id` are
 * copies for searching, not authenticated (results show the event itself).
 * `audit_tree` keeps the tree's right edge and chain value as of a saved
 * size (saved every TREE_SAVE_EVERY events and on close), so opening a large
 * log reads one row and replays at most the events after it, not every leaf.
 */
export interface AuditMigration {
  version: number
  name: string
  sql: string
}

export const AUDIT_MIGRATIONS: readonly AuditMigration[] = [
  {
    version: 1,
    name: 'events, checkpoints, tree state',
    sql: `
CREATE TABLE audit_events (
  seq INTEGER PRIMARY KEY NOT NULL,
  time_ms INTEGER NOT NULL,
  type TEXT NOT NULL,
  actor TEXT,
  task_id TEXT,
  event BLOB NOT NULL,
  chain_hash BLOB NOT NULL
) STRICT;
CREATE INDEX audit_events_type ON audit_events (type, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, seq) WHERE actor IS NOT NULL;
CREATE INDEX audit_events_task ON audit_events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE TABLE audit_checkpoints (
  tree_size INTEGER PRIMARY KEY NOT NULL,
  root_hash BLOB NOT NULL,
  note TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE audit_tree (
  id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
  size INTEGER NOT NULL,
  chain_hash BLOB NOT NULL,
  edge BLOB NOT NULL
) STRICT;
CREATE TABLE audit_meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
`,
  },
]
