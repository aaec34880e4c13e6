/**
 * Operators' credentials set up in the console: WebAuthn passkeys (public
 * key, counter) and TOTP secrets (with the last time step used, so a code
 * is accepted once). One small SQLite file, 0600 in a 0700 directory.
 */
import { chmodSync, closeSync, constants, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'

export interface StoredPasskey {
  readonly id: string
  readonly operator: string
  readonly publicKey: Uint8Array
  readonly counter: number
  readonly transports: readonly string[]
  readonly createdAt: number
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS passkeys (
  id TEXT PRIMARY KEY NOT NULL,
  operator TEXT NOT NULL,
  public_key BLOB NOT NULL,
  counter INTEGER NOT NULL,
  transports TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS passkeys_operator ON passkeys (operator);
CREATE TABLE IF NOT EXISTS totp (
  operator TEXT PRIMARY KEY NOT NULL,
  secret TEXT NOT NULL,
  last_step INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
`

export class OperatorStore {
  readonly #db: Database.Database

  private constructor(db: Database.Database) {
    this.#db = db
  }

  static open(path: string): OperatorStore {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    closeSync(openSync(path, constants.O_CREAT | constants.O_RDWR, 0o600))
    chmodSync(path, 0o600)
    const db = new Database(path)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.exec(SCHEMA)
    return new OperatorStore(db)
  }

  close(): void {
    this.#db.close()
  }

  addPasskey(p: StoredPasskey): void {
    this.#db
      .prepare('INSERT INTO passkeys (id, operator, public_key, counter, transports, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(p.id, p.operator, Buffer.from(p.publicKey), p.counter, JSON.stringify(p.transports), p.createdAt)
  }

  passkey(id: string): StoredPasskey | undefined {
    const r = this.#db.prepare('SELECT * FROM passkeys WHERE id = ?').get(id) as
      { id: string; operator: string; public_key: Buffer; counter: number; transports: string; created_at: number } | undefined
    return r
      ? {
          id: r.id,
          operator: r.operator,
          publicKey: new Uint8Array(r.public_key),
          counter: r.counter,
          transports: JSON.parse(r.transports) as string[],
          createdAt: r.created_at,
        }
      : undefined
  }

  passkeysOf(operator: string): { id: string; transports: string[] }[] {
    return (this.#db.prepare('SELECT id, transports FROM passkeys WHERE operator = ?').all(operator) as { id: string; transports: string }[]).map((r) => ({
      id: r.id,
      transports: JSON.parse(r.transports) as string[],
    }))
  }

  /** Moves the counter forward; false when the stored counter is not below `counter` (a cloned authenticator). */
  advanceCounter(id: string, counter: number): boolean {
    return (
      this.#db.prepare('UPDATE passkeys SET counter = ? WHERE id = ? AND (counter < ? OR (counter = 0 AND ? = 0))').run(counter, id, counter, counter)
        .changes === 1
    )
  }

  setTotp(operator: string, secret: string, at: number): void {
    this.#db
      .prepare(
        'INSERT INTO totp (operator, secret, last_step, created_at) VALUES (?, ?, -1, ?) ON CONFLICT (operator) DO UPDATE SET secret = excluded.secret, last_step = -1, created_at = excluded.created_at',
      )
      .run(operator, secret, at)
  }

  /** Replaces an operator's stored secret if it is still `from` (keeps the last used step). */
  replaceTotpSecret(operator: string, from: string, to: string): void {
    this.#db.prepare('UPDATE totp SET secret = ? WHERE operator = ? AND secret = ?').run(to, operator, from)
  }

  totpSecret(operator: string): string | undefined {
    return (this.#db.prepare('SELECT secret FROM totp WHERE operator = ?').get(operator) as { secret: string } | undefined)?.secret
  }

  /** Records `step` as used for the operator's TOTP; false when it (or a later one) was used already. */
  useTotpStep(operator: string, step: number): boolean {
    this.#db.prepare('INSERT INTO totp (operator, secret, last_step, created_at) VALUES (?, ?, -1, 0) ON CONFLICT (operator) DO NOTHING').run(operator, '')
    return this.#db.prepare('UPDATE totp SET last_step = ? WHERE operator = ? AND last_step < ?').run(step, operator, step).changes === 1
  }

  /** Whether the operator has any credential set up in the console. */
  hasCredential(operator: string): boolean {
    return (
      this.#db
        .prepare('SELECT 1 FROM passkeys WHERE operator = ? UNION ALL SELECT 1 FROM totp WHERE operator = ? AND secret <> ?')
        .get(operator, operator, '') !== undefined
    )
  }
}
