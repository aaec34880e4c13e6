/**
 * Numbered schema migrations of the broker's store, applied in order inside
 * one transaction at open and recorded in `schema_migrations` (as the
 * server's datastore does). Never edit a released migration: append one.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

export const BROKER_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tasks, tokens, used grants, signing keys',
    sql: `
CREATE TABLE tasks (
  task_id TEXT PRIMARY KEY NOT NULL,
  orchestration_id TEXT,
  agent TEXT NOT NULL,
  scopes TEXT NOT NULL,
  resources TEXT NOT NULL,
  ttl_seconds INTEGER NOT NULL,
  max_renewals INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  ended_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX tasks_agent ON tasks (agent);
CREATE INDEX tasks_orchestration ON tasks (orchestration_id);

-- Every token the broker issued: access tokens and one-time delegation grants.
-- Times are epoch seconds; lists are JSON arrays.
CREATE TABLE tokens (
  jti TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('access', 'grant')),
  sub TEXT NOT NULL,
  client_id TEXT NOT NULL,
  task_id TEXT REFERENCES tasks (task_id),
  parent_jti TEXT REFERENCES tokens (jti),
  root_jti TEXT NOT NULL,
  actors TEXT NOT NULL,
  depth INTEGER NOT NULL,
  scopes TEXT NOT NULL,
  resources TEXT NOT NULL,
  audiences TEXT NOT NULL,
  authorization_details TEXT,
  cnf_jkt TEXT,
  cnf_x5t TEXT,
  may_act TEXT,
  kid TEXT NOT NULL,
  iat INTEGER NOT NULL,
  exp INTEGER NOT NULL,
  max_exp INTEGER NOT NULL,
  renewals INTEGER NOT NULL,
  renewed_by TEXT,
  revoked_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_parent ON tokens (parent_jti);
CREATE INDEX tokens_root ON tokens (root_jti);
CREATE INDEX tokens_task ON tokens (task_id);

CREATE TABLE used_grants (
  jti TEXT PRIMARY KEY NOT NULL REFERENCES tokens (jti),
  used_by TEXT NOT NULL,
  used_at INTEGER NOT NULL,
  issued_jti TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Signing keys by KeyManager id: 'next' (published, not yet used), 'current'
-- (signs), 'previous' (published until publish_until, then deleted).
CREATE TABLE signing_keys (
  key_id TEXT PRIMARY KEY NOT NULL,
  kid TEXT NOT NULL UNIQUE,
  alg TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('next', 'current', 'previous')),
  created_at INTEGER NOT NULL,
  activated_at INTEGER,
  publish_until INTEGER
) STRICT, WITHOUT ROWID;
`,
  },
  {
    version: 2,
    name: 'revocations',
    sql: `
-- Revocations at five levels (tokens/revocation.ts), in feed order. jtis: the
-- token jtis a token or chain-by-jti revocation covers, expanded when it was made.
CREATE TABLE revocations (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('token', 'chain', 'instance', 'task', 'prefix')),
  value TEXT NOT NULL,
  jtis TEXT,
  reason TEXT,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  not_after INTEGER,
  expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_kind_value ON revocations (kind, value);
CREATE INDEX revocations_expires ON revocations (expires_at);
`,
  },
  {
    version: 3,
    name: 'tool_credentials',
    sql: `
-- Static credentials of tools that accept nothing better (credentials.ts), sealed
-- (AES-256-GCM) under a key in the key manager; the header they go in, never the value in clear.
CREATE TABLE tool_credentials (
  tool TEXT PRIMARY KEY,
  header TEXT NOT NULL,
  scheme TEXT,
  sealed BLOB NOT NULL,
  version INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
`,
  },
  {
    version: 4,
    name: 'intents',
    sql: `
-- Declared intents (src/broker/intents): what an agent said it is about to do, the risk
-- the rules gave it, who decided and how it ended. Never the parameters, only their digest.
-- factors, delegation, detail: JSON. Times are epoch seconds.
CREATE TABLE intents (
  id TEXT PRIMARY KEY NOT NULL,
  auth_req_id TEXT UNIQUE,
  agent TEXT NOT NULL,
  client_id TEXT NOT NULL,
  task_id TEXT,
  action TEXT NOT NULL,
  resource TEXT NOT NULL,
  audience TEXT NOT NULL,
  params_digest TEXT NOT NULL,
  declared_risk REAL,
  risk REAL NOT NULL,
  factors TEXT NOT NULL,
  decision TEXT NOT NULL CHECK (decision IN ('auto-approve', 'needs-human', 'refuse')),
  decided_by TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('approved', 'pending', 'denied', 'refused', 'expired', 'used', 'mismatch')),
  approver_group TEXT,
  approver_id TEXT,
  approver_method TEXT,
  reason TEXT,
  binding_message TEXT,
  node_attestation TEXT,
  delegation TEXT NOT NULL,
  detail TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  decided_at INTEGER,
  token_jti TEXT UNIQUE,
  token_exp INTEGER,
  outcome TEXT,
  outcome_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX intents_status ON intents (status, created_at);
CREATE INDEX intents_agent ON intents (agent, status, created_at);
`,
  },
]
