/**
 * Numbered schema migrations, applied in order inside one transaction at open
 * and recorded in `schema_migrations`. Never edit a released migration: append
 * a new one. The code refuses to open a database whose recorded version is
 * newer than the last migration it knows.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    // Tables keyed by text are WITHOUT ROWID: secondary indexes then carry the key,
    // so a list by parent_id (or attestor) comes out in key order without a sort.
    sql: `
CREATE TABLE entries (
  id TEXT PRIMARY KEY NOT NULL,
  spiffe_id TEXT NOT NULL,
  parent_id TEXT NOT NULL,
  x509_ttl INTEGER NOT NULL,
  jwt_ttl INTEGER NOT NULL,
  hint TEXT NOT NULL,
  admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
  downstream INTEGER NOT NULL CHECK (downstream IN (0, 1)),
  expires_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  revision INTEGER NOT NULL,
  -- number of rows in entry_selectors: lets subset matching run from the (type, value) index
  selector_count INTEGER NOT NULL,
  -- sha256 of the canonical [spiffe_id, parent_id, sorted selectors]: no duplicate entries
  unique_key TEXT NOT NULL UNIQUE
) STRICT, WITHOUT ROWID;
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;

-- the primary key (entry_id, type, value) also serves lookups by entry_id
CREATE TABLE entry_selectors (
  entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (entry_id, type, value)
) STRICT, WITHOUT ROWID;
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
  entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  dns_name TEXT NOT NULL,
  PRIMARY KEY (entry_id, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE entry_federates_with (
  entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  trust_domain TEXT NOT NULL,
  PRIMARY KEY (entry_id, position)
) STRICT, WITHOUT ROWID;
CREATE INDEX entry_federates_with_trust_domain ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
  agent_id TEXT PRIMARY KEY NOT NULL,
  attestor TEXT NOT NULL,
  serial TEXT NOT NULL,
  previous_serial TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  banned INTEGER NOT NULL CHECK (banned IN (0, 1)),
  can_reattest INTEGER NOT NULL CHECK (can_reattest IN (0, 1)),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX attested_nodes_attestor ON attested_nodes (attestor);
CREATE INDEX attested_nodes_expires_at ON attested_nodes (expires_at);

CREATE TABLE node_selectors (
  agent_id TEXT NOT NULL REFERENCES attested_nodes (agent_id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (agent_id, type, value)
) STRICT, WITHOUT ROWID;
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
  token_hash TEXT PRIMARY KEY NOT NULL,
  spiffe_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
  trust_domain TEXT PRIMARY KEY NOT NULL,
  document TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE ca_journal (
  name TEXT PRIMARY KEY NOT NULL,
  json TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE kv (
  namespace TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (namespace, key)
) STRICT, WITHOUT ROWID;
`,
  },
  {
    version: 2,
    name: 'live instances under max_instances',
    // One row per (bound prefix, instance): a restart keeps every max_instances count.
    sql: `
CREATE TABLE live_instances (
  prefix TEXT NOT NULL,
  instance_key TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (prefix, instance_key)
) STRICT, WITHOUT ROWID;
CREATE INDEX live_instances_instance_key ON live_instances (instance_key);
CREATE INDEX live_instances_expires_at ON live_instances (expires_at);
`,
  },
  {
    version: 3,
    name: 'revocations of instances and SPIFFE ID prefixes',
    // AUTOINCREMENT: the id is the revocation's sequence number and is never reused, not even after a delete or sweep.
    sql: `
CREATE TABLE revocations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('instance', 'prefix')),
  value TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  not_after INTEGER,
  expires_at INTEGER,
  UNIQUE (kind, value)
) STRICT;
CREATE INDEX revocations_expires_at ON revocations (expires_at) WHERE expires_at IS NOT NULL;
`,
  },
]

/** The schema version this code writes. */
export const SQLITE_SCHEMA_VERSION: number = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0
