/** The minimal logger every module depends on; pino is created only in `cli/`. */
export type LogFieldsObject = Record<string, unknown>

export interface Logger {
  debug(fields: LogFieldsObject, msg: string): void
  info(fields: LogFieldsObject, msg: string): void
  warn(fields: LogFieldsObject, msg: string): void
  error(fields: LogFieldsObject, msg: string): void
  child(fields: LogFieldsObject): Logger
}

/** Log field names: one spelling everywhere. */
export const F = {
  SPIFFE_ID: 'spiffe_id',
  TRUST_DOMAIN: 'trust_domain',
  AGENT_ID: 'agent_id',
  ENTRY_ID: 'entry_id',
  PID: 'pid',
  UID: 'uid',
  SELECTORS: 'selectors',
  PLUGIN_TYPE: 'plugin_type',
  PLUGIN_NAME: 'plugin_name',
  METHOD: 'method',
  ERROR_CODE: 'error_code',
  ERR: 'err',
  KEY_ID: 'key_id',
  SERIAL: 'serial',
  KID: 'kid',
  JTI: 'jti',
  SUBSYSTEM: 'subsystem',
  COUNT: 'count',
  DURATION_MS: 'duration_ms',
  PEER: 'peer',
  RELATIONSHIP: 'relationship',
  REASON: 'reason',
  ADDRESS: 'address',
  PATH: 'path',
} as const

/** A logger that drops everything. */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger
  },
}
