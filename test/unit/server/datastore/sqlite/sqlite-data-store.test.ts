import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../../src/errors/index.js'
import { MIGRATIONS, SQLITE_SCHEMA_VERSION } from '../../../../../src/server/datastore/sqlite/index.js'
import { openSqliteDataStore } from '../../../../../src/server/datastore/index.js'
import { captureLogger } from '../../../../helpers/capture-logger.js'
import { tempDir } from '../../../../helpers/temp.js'

const entry = (n: number) => ({
  spiffeId: `spiffe://corp.example/w${n}`,
  parentId: 'spiffe://corp.example/agent',
  selectors: [
    { type: 'unix', value: `uid:${n}` },
    { type: 'unix', value: 'gid:0' },
  ],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [`w${n}.example`],
  federatesWith: ['partner.example'],
  hint: '',
  admin: false,
  downstream: false,
  expiresAt: null,
})

describe('openSqliteDataStore', () => {
  let dir: string
  let cleanup: () => void
  let path: string
  beforeEach(() => {
    ;({ dir, cleanup } = tempDir('w-sq-'))
    path = join(dir, 'state', 'nested', 'datastore.sqlite3')
  })
  afterEach(() => cleanup())

  const raw = (readonly = true): Database.Database => new Database(path, { readonly, fileMustExist: true })

  it('applies the migrations once and records them', async () => {
    const log = captureLogger()
    const ds = await openSqliteDataStore({ path, log })
    await ds.close()
    let db = raw()
    const first = db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all()
    db.close()
    expect(first.map((r) => (r as { version: number }).version)).toEqual(MIGRATIONS.map((m) => m.version))
    expect(SQLITE_SCHEMA_VERSION).toBe(MIGRATIONS[MIGRATIONS.length - 1]?.version)
    expect(log.lines.filter((l) => l.msg === 'Applied datastore migration')).toHaveLength(MIGRATIONS.length)

    const log2 = captureLogger()
    await (await openSqliteDataStore({ path, log: log2 })).close()
    db = raw()
    expect(db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all()).toEqual(first)
    db.close()
    expect(log2.lines.filter((l) => l.msg === 'Applied datastore migration')).toHaveLength(0)
    expect(log2.lines.find((l) => l.msg === 'Opened SQLite datastore')?.fields).toMatchObject({ schemaVersion: SQLITE_SCHEMA_VERSION })
  })

  it('upgrades a version 1 database in place: live_instances is added, the data stays', async () => {
    const ds = await openSqliteDataStore({ path })
    await ds.kv.put('ns', 'k', 'v')
    await ds.close()
    // Make it what version 1 wrote.
    const db = raw(false)
    db.exec('DROP TABLE live_instances; DROP TABLE revocations; DELETE FROM schema_migrations WHERE version > 1')
    db.close()
    const log = captureLogger()
    const up = await openSqliteDataStore({ path, log })
    expect(log.lines.filter((l) => l.msg === 'Applied datastore migration')).toHaveLength(MIGRATIONS.length - 1)
    expect(await up.kv.get('ns', 'k')).toBe('v')
    await up.liveInstances.put({ prefix: '/p', instanceKey: 'a|e', expiresAt: 10 })
    expect(await up.liveInstances.list('/p', 0)).toEqual([{ prefix: '/p', instanceKey: 'a|e', expiresAt: 10 }])
    expect((await up.revocations.create({ kind: 'prefix', value: 'spiffe://td/q', reason: '', notAfter: null, expiresAt: null })).created).toBe(true)
    await up.close()
  })

  it('refuses a database written by a newer schema version with a clear ERR_DATASTORE', async () => {
    await (await openSqliteDataStore({ path })).close()
    const db = raw(false)
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(SQLITE_SCHEMA_VERSION + 1, 'future', 0)
    db.close()
    const err = await openSqliteDataStore({ path }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IdentityError)
    expect(err).toMatchObject({
      code: 'ERR_DATASTORE',
      details: { schemaVersion: SQLITE_SCHEMA_VERSION + 1, supportedVersion: SQLITE_SCHEMA_VERSION },
    })
    expect((err as Error).message).toMatch(/newer than this build of warrant supports.*upgrade warrant/)
  })

  it('creates the directory 0700 and the database, WAL and SHM files 0600', async () => {
    const ds = await openSqliteDataStore({ path })
    await ds.entries.create(entry(1))
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700)
    expect(statSync(join(dir, 'state', 'nested')).mode & 0o777).toBe(0o700)
    for (const p of [path, `${path}-wal`, `${path}-shm`]) expect(statSync(p).mode & 0o777, p).toBe(0o600)
    await ds.close()
  })

  it('tightens an existing world-readable database file to 0600 and warns', async () => {
    await (await openSqliteDataStore({ path })).close()
    chmodSync(path, 0o644)
    const log = captureLogger()
    await (await openSqliteDataStore({ path, log })).close()
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(log.lines.some((l) => l.level === 'warn' && l.fields.path === path)).toBe(true)
  })

  it('uses WAL, enforces foreign keys (cascade) and passes integrity_check', async () => {
    const ds = await openSqliteDataStore({ path })
    const e = await ds.entries.create(entry(1))
    await ds.nodes.upsert({
      agentId: 'spiffe://corp.example/a',
      attestor: 'tpm',
      selectors: [{ type: 'tpm', value: 'x' }],
      serial: '1',
      previousSerial: '',
      expiresAt: 1,
      banned: false,
      canReattest: false,
    })
    const db = raw()
    const rows = (sql: string, ...a: unknown[]): number => (db.prepare(sql).get(...a) as { n: number }).n
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(rows('SELECT COUNT(*) AS n FROM entry_selectors WHERE entry_id = ?', e.id)).toBe(2)
    await ds.entries.delete(e.id)
    await ds.nodes.delete('spiffe://corp.example/a')
    for (const t of ['entry_selectors', 'entry_dns_names', 'entry_federates_with', 'node_selectors']) {
      expect(rows(`SELECT COUNT(*) AS n FROM ${t}`), t).toBe(0)
    }
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok')
    expect(db.pragma('foreign_key_check')).toEqual([])
    db.close()
    await ds.close()
  })

  it('wraps SQLite failures as ERR_DATASTORE with the cause chained and no values in the message', async () => {
    const ds = await openSqliteDataStore({ path })
    await ds.entries.create(entry(1))
    const db = raw(false)
    db.exec('DROP TABLE entry_dns_names')
    db.close()
    const err = await ds.entries.create({ ...entry(2), spiffeId: 'spiffe://corp.example/secret-name' }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_DATASTORE', message: 'datastore: create entry failed' })
    expect((err as Error).cause).toBeInstanceOf(Database.SqliteError)
    expect((err as Error).message).not.toContain('secret-name')
    // the failed create left nothing behind
    expect(await ds.entries.count()).toBe(1)
    await ds.close()
  })

  it('fails with ERR_DATASTORE on a file that is not a SQLite database', async () => {
    mkdirSync(join(dir, 'state', 'nested'), { recursive: true })
    writeFileSync(path, 'this is not a database, it is a long enough text file to have a header'.repeat(20), { mode: 0o600 })
    const err = await openSqliteDataStore({ path }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_DATASTORE' })
    expect((err as Error).cause).toBeInstanceOf(Error)
  })

  it.each([{ path: '' }, { path: 3 }, null])('rejects bad options %j with TypeError', async (opts) => {
    await expect(openSqliteDataStore(opts as never)).rejects.toBeInstanceOf(TypeError)
  })

  it('lists thousands of entries of one parent in one call', async () => {
    const ds = await openSqliteDataStore({ path: ':memory:' })
    await ds.tx(async (t) => {
      for (let i = 0; i < 3000; i++) {
        await t.entries.create({ ...entry(i), parentId: i % 3 === 0 ? 'spiffe://corp.example/a' : 'spiffe://corp.example/b' })
      }
    })
    const { entries, nextPageToken } = await ds.entries.list({ parentId: 'spiffe://corp.example/a' })
    expect(entries).toHaveLength(1000)
    expect(nextPageToken).toBe('')
    expect(entries.every((e) => e.selectors.length === 2 && e.dnsNames.length === 1 && e.federatesWith.length === 1)).toBe(true)
    const hit = await ds.entries.list({
      parentId: 'spiffe://corp.example/a',
      selectors: {
        set: [
          { type: 'unix', value: 'uid:3' },
          { type: 'unix', value: 'gid:0' },
          { type: 'unix', value: 'uid:4' },
        ],
        match: 'subset',
      },
    })
    expect(hit.entries.map((e) => e.spiffeId)).toEqual(['spiffe://corp.example/w3'])
    await ds.close()
  })
})
