/**
 * Numbered schema migrations of the PostgreSQL datastore, applied in order
 * inside one transaction at open, under an advisory lock (several servers
 * may start at once: one migrates, the others wait and find nothing left to
 * do), and recorded in `schema_migrations`. Never edit a released migration:
 * append a new one. The code refuses a database whose recorded version is
 * newer than the last migration it knows.
 *
 * Every text column is COLLATE "C": lists are ordered by key in code-unit
 * order whatever the database's collation (the same order as SQLite and memory).
 * Times are epoch milliseconds (BIGINT); TTLs seconds.
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
    sql: `
CREATE TABLE entries (
  id TEXT COLLATE "C" PRIMARY KEY,
  spiffe_id TEXT COLLATE "C" NOT NULL,
  parent_id TEXT COLLATE "C" NOT NULL,
  x509_ttl BIGINT NOT NULL,
  jwt_ttl BIGINT NOT NULL,
  hint TEXT COLLATE "C" NOT NULL,
  admin BOOLEAN NOT NULL,
  downstream BOOLEAN NOT NULL,
  expires_at BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  revision BIGINT NOT NULL,
  -- the sorted selectors as [[type, value], ...]: read with the row; entry_selectors serves matching
  selectors JSONB NOT NULL,
  -- number of rows in entry_selectors: lets subset matching run from the (type, value) index
  selector_count INTEGER NOT NULL,
  dns_names TEXT[] COLLATE "C" NOT NULL,
  federates_with TEXT[] COLLATE "C" NOT NULL,
  -- sha256 of the canonical [spiffe_id, parent_id, sorted selectors]: no duplicate entries
  unique_key TEXT COLLATE "C" NOT NULL CONSTRAINT entries_unique_key UNIQUE
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id, id);
CREATE INDEX entries_parent_id ON entries (parent_id, id);
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_federates_with ON entries USING GIN (federates_with);

CREATE TABLE entry_selectors (
  entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
  type TEXT COLLATE "C" NOT NULL,
  value TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE attested_nodes (
  agent_id TEXT COLLATE "C" PRIMARY KEY,
  attestor TEXT COLLATE "C" NOT NULL,
  serial TEXT COLLATE "C" NOT NULL,
  previous_serial TEXT COLLATE "C" NOT NULL,
  expires_at BIGINT NOT NULL,
  banned BOOLEAN NOT NULL,
  can_reattest BOOLEAN NOT NULL,
  selectors JSONB NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX attested_nodes_attestor ON attested_nodes (attestor, agent_id);
CREATE INDEX attested_nodes_expires_at ON attested_nodes (expires_at);

CREATE TABLE node_selectors (
  agent_id TEXT COLLATE "C" NOT NULL REFERENCES attested_nodes (agent_id) ON DELETE CASCADE,
  type TEXT COLLATE "C" NOT NULL,
  value TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (agent_id, type, value)
);
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
  token_hash TEXT COLLATE "C" PRIMARY KEY,
  spiffe_id TEXT COLLATE "C" NOT NULL,
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
  trust_domain TEXT COLLATE "C" PRIMARY KEY,
  document TEXT COLLATE "C" NOT NULL,
  sequence BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);

CREATE TABLE ca_journal (
  name TEXT COLLATE "C" PRIMARY KEY,
  json TEXT COLLATE "C" NOT NULL
);

CREATE TABLE kv (
  namespace TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  value TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (namespace, key)
);

CREATE TABLE live_instances (
  prefix TEXT COLLATE "C" NOT NULL,
  instance_key TEXT COLLATE "C" NOT NULL,
  expires_at BIGINT NOT NULL,
  PRIMARY KEY (prefix, instance_key)
);
CREATE INDEX live_instances_instance_key ON live_instances (instance_key);
CREATE INDEX live_instances_expires_at ON live_instances (expires_at);

-- an identity column: the id is the revocation's sequence number and is never reused, not even after a delete or sweep
CREATE TABLE revocations (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('instance', 'prefix')),
  value TEXT COLLATE "C" NOT NULL,
  reason TEXT COLLATE "C" NOT NULL,
  created_at BIGINT NOT NULL,
  not_after BIGINT,
  expires_at BIGINT,
  CONSTRAINT revocations_kind_value UNIQUE (kind, value)
);
CREATE INDEX revocations_expires_at ON revocations (expires_at) WHERE expires_at IS NOT NULL;
`,
  },
  {
    version: 2,
    name: 'change log for the change feed',
    // One counter row, updated by every writing transaction just before its COMMIT: its row lock orders those commits,
    // so the sequence numbers are gapless and a reader that sees seq N has already been able to see every seq below N.
    sql: `
CREATE TABLE change_counter (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last BIGINT NOT NULL,
  -- every change up to this seq was pruned: a reader behind it must reload
  pruned_through BIGINT NOT NULL
);
INSERT INTO change_counter (id, last, pruned_through) VALUES (1, 0, 0);

CREATE TABLE changes (
  seq BIGINT PRIMARY KEY,
  kind TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  op TEXT COLLATE "C" NOT NULL CHECK (op IN ('put', 'delete')),
  at BIGINT NOT NULL
);
CREATE INDEX changes_at ON changes (at);
`,
  },
]

/** The schema version this code writes. */
export const POSTGRES_SCHEMA_VERSION: number = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0
