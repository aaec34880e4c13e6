import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../../../src/common/log/logger.js'
import type { DataStore } from '../../../../../src/server/datastore/index.js'
import {
  MIGRATIONS,
  openPostgresDataStore,
  postgresDataStorePlugin,
  type PostgresDataStoreOptions,
} from '../../../../../src/server/datastore/postgres/index.js'
import { checkConnectionString, sslOptions } from '../../../../../src/server/datastore/postgres/connection.js'
import { TrustDomain } from '../../../../../src/spiffe/spiffe-id.js'
import { captureLogger } from '../../../../helpers/capture-logger.js'
import { newEntry } from '../../../../helpers/entries.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster, type PostgresDatabase } from '../../../../helpers/postgres-cluster.js'
import { tempDir } from '../../../../helpers/temp.js'
import { requireTools } from '../../../../helpers/tools.js'

const sel = (v: string) => [{ type: 'unix', value: v }]

describe.runIf(requirePostgres())('postgres datastore', () => {
  let cluster: PostgresCluster
  const tmp = tempDir('w-pgt-')
  const open = (db: PostgresDatabase, extra: Partial<PostgresDataStoreOptions> = {}): Promise<DataStore> =>
    openPostgresDataStore({ connectionString: db.connectionString, password: cluster.password, ...extra })
  const deps = () => ({ log: nullLogger, clock: { now: () => Date.now() }, trustDomain: TrustDomain.fromString('corp.example'), dataDir: tmp.dir })

  beforeAll(async () => {
    cluster = await startPostgresCluster()
  })
  afterAll(async () => {
    await cluster?.destroy()
    tmp.cleanup()
  })

  describe('migrations', () => {
    it('several servers opening a new database at once all succeed, and the schema is applied once', async () => {
      const db = await cluster.createDatabase('mig')
      const logs = Array.from({ length: 4 }, () => captureLogger())
      const stores = await Promise.all(logs.map((log) => open(db, { log })))
      const versions = await cluster.sql<{ version: number }>(db.name, 'SELECT version FROM schema_migrations ORDER BY version')
      expect(versions.map((v) => v.version)).toEqual(MIGRATIONS.map((m) => m.version))
      expect(logs.flatMap((l) => l.lines).filter((l) => l.msg === 'Applied datastore migration')).toHaveLength(MIGRATIONS.length)
      await stores[0]!.entries.create(newEntry())
      expect(await stores[3]!.entries.count()).toBe(1)
      await Promise.all(stores.map((s) => s.close()))
    })

    it('an opener waits while another holds the migration lock', async () => {
      const db = await cluster.createDatabase('miglock')
      const admin = await cluster.connect(db.name)
      await admin.query('BEGIN')
      await admin.query('SELECT pg_advisory_xact_lock($1, 1)', [0x57415252])
      let opened = false
      const opening = open(db).then((ds) => {
        opened = true
        return ds
      })
      await new Promise((r) => setTimeout(r, 300))
      expect(opened).toBe(false)
      await admin.query('COMMIT')
      const ds = await opening
      expect(await ds.entries.count()).toBe(0)
      await ds.close()
      await admin.end()
    })

    it('refuses a schema newer than this build, and changes nothing', async () => {
      const db = await cluster.createDatabase('newer')
      await (await open(db)).close()
      await cluster.sql(db.name, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
      await expect(open(db)).rejects.toMatchObject({
        code: 'ERR_DATASTORE',
        message: expect.stringContaining('newer than this build'),
        details: { schemaVersion: 999 },
      })
    })
  })

  describe('configuration', () => {
    const base = () => ({ connection_string: cluster.url('postgres') })

    it('refuses a password in the connection string, without repeating it', async () => {
      const withPw = `postgresql://postgres:${encodeURIComponent(cluster.password)}@127.0.0.1:${cluster.port}/postgres`
      const err = await openPostgresDataStore({ connectionString: withPw }).catch((e: unknown) => e)
      expect(err).toMatchObject({
        code: 'ERR_CONFIG_INVALID',
        details: { issues: [{ path: 'connection_string', message: expect.stringMatching(/password/) }] },
      })
      expect(String((err as Error).message)).not.toContain(cluster.password)
      expect(() => postgresDataStorePlugin.parseConfig({ connection_string: withPw })).toThrow(
        expect.objectContaining({ code: 'ERR_CONFIG_INVALID', message: expect.stringContaining('must not contain a password') }),
      )
      expect(() => postgresDataStorePlugin.parseConfig({ connection_string: `${cluster.url('postgres')}?password=x` })).toThrow(
        expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }),
      )
      expect(() => postgresDataStorePlugin.parseConfig({ ...base(), password: 'inline' })).toThrow(
        expect.objectContaining({ message: expect.stringContaining('never written inline') }),
      )
    })

    it.each([
      [{ connection_string: 'mysql://h/db' }, 'connection_string'],
      [{ connection_string: 'postgresql://u@h/db?sslmode=require' }, 'connection_string'],
      [{ connection_string: 'postgresql://u@h/db?sslrootcert=/x' }, 'connection_string'],
      [{ connection_string: 'postgresql://u@h/db?target_session_attrs=any' }, 'connection_string'],
      [{ connection_string: 'postgresql://u@h/db', password_file: '/a', password_env: 'B' }, 'password_file'],
      [{ connection_string: 'postgresql://u@h/db', pool_size: 0 }, 'pool_size'],
      [{ connection_string: 'postgresql://u@h/db', tls: { require: false, ca_file: '/ca.pem' } }, 'tls.require'],
      [{ connection_string: 'postgresql://u@h/db', tls: { verify: true } }, 'tls'],
    ])('refuses %j (issue at %s)', (raw, path) => {
      expect(() => postgresDataStorePlugin.parseConfig(raw)).toThrow(
        expect.objectContaining({ code: 'ERR_CONFIG_INVALID', details: { issues: expect.arrayContaining([expect.objectContaining({ path })]) } }),
      )
    })

    it('password_file works; a wrong password or a missing file is refused clearly', async () => {
      const pwFile = join(tmp.dir, 'pg-password')
      writeFileSync(pwFile, `${cluster.password}\n`, { mode: 0o600 })
      const ds = await postgresDataStorePlugin.create(postgresDataStorePlugin.parseConfig({ ...base(), password_file: pwFile }), deps())
      await ds.kv.put('ns', 'k', 'v')
      expect(await ds.kv.get('ns', 'k')).toBe('v')
      await ds.close()

      writeFileSync(pwFile, 'wrong\n')
      const err = await postgresDataStorePlugin
        .create(postgresDataStorePlugin.parseConfig({ ...base(), password_file: pwFile }), deps())
        .catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE', message: expect.stringContaining('login refused') })
      await expect(
        postgresDataStorePlugin.create(postgresDataStorePlugin.parseConfig({ ...base(), password_file: join(tmp.dir, 'missing') }), deps()),
      ).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID', message: expect.stringContaining('does not exist') })
    })

    it('password_env works', async () => {
      process.env.WARRANT_TEST_PG_PASSWORD = cluster.password
      try {
        const ds = await postgresDataStorePlugin.create(postgresDataStorePlugin.parseConfig({ ...base(), password_env: 'WARRANT_TEST_PG_PASSWORD' }), deps())
        expect(await ds.entries.count()).toBeGreaterThanOrEqual(0)
        await ds.close()
      } finally {
        delete process.env.WARRANT_TEST_PG_PASSWORD
      }
    })

    it('an unreachable server is a clear ERR_DATASTORE_UNAVAILABLE at open', async () => {
      const err = await openPostgresDataStore({ connectionString: 'postgresql://postgres@127.0.0.1:1/x', password: 'p' }).catch((e: unknown) => e)
      expect(err).toMatchObject({
        code: 'ERR_DATASTORE_UNAVAILABLE',
        message: expect.stringMatching(/cannot connect to PostgreSQL at 127\.0\.0\.1:1\/x \(ECONNREFUSED\)/),
      })
    })
  })

  describe('transactions across servers', () => {
    it('run one at a time: two servers incrementing one counter lose no update', async () => {
      const db = await cluster.createDatabase('serial')
      const [a, b] = [await open(db), await open(db)]
      const bump = (ds: DataStore) =>
        ds.tx(async (t) => {
          const n = Number((await t.kv.get('ns', 'counter')) ?? '0')
          await new Promise((r) => setTimeout(r, 5))
          await t.kv.put('ns', 'counter', String(n + 1))
        })
      await Promise.all(Array.from({ length: 10 }, (_, i) => bump(i % 2 === 0 ? a : b)))
      expect(await a.kv.get('ns', 'counter')).toBe('10')
      await a.close()
      await b.close()
    })

    it('the same entry created through two servers at once: one wins, the other is told which entry exists', async () => {
      const db = await cluster.createDatabase('dup')
      const [a, b] = [await open(db), await open(db)]
      for (let i = 0; i < 10; i++) {
        const e = newEntry({ selectors: sel(`uid:${i}`) })
        const results = await Promise.allSettled([a.entries.create(e), b.entries.create(e)])
        const won = results.filter((r) => r.status === 'fulfilled')
        expect(won).toHaveLength(1)
        const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult
        expect(lost.reason).toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
      }
      expect(await a.entries.count()).toBe(10)
      // concurrent revocations of one value from two servers: one record
      const r = await Promise.all([a, b].map((ds) => ds.revocations.create({ kind: 'instance', value: 'i1', reason: '', notAfter: null, expiresAt: null })))
      expect(r.filter((x) => x.created)).toHaveLength(1)
      expect(r[0]!.revocation.id).toBe(r[1]!.revocation.id)
      await a.close()
      await b.close()
    })
  })

  describe('atomicity', () => {
    it('no partial write: a statement failing inside a multi-statement operation or transaction undoes it all', async () => {
      const db = await cluster.createDatabase('partial')
      const ds = await open(db)
      // A selector row that PostgreSQL refuses, after the entry row went in.
      await cluster.sql(
        db.name,
        `CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.value = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON entry_selectors FOR EACH ROW EXECUTE FUNCTION boom();`,
      )
      await expect(ds.entries.create(newEntry({ selectors: sel('boom') }))).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      expect(await ds.entries.count()).toBe(0)
      expect(await cluster.sql(db.name, 'SELECT * FROM entries')).toEqual([])

      // Inside a transaction: the failed operation is undone alone when caught…
      await ds.tx(async (t) => {
        await t.kv.put('ns', 'a', '1')
        await expect(t.entries.create(newEntry({ selectors: sel('boom') }))).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
        await t.entries.create(newEntry({ selectors: sel('fine') }))
      })
      expect(await ds.entries.count()).toBe(1)
      expect(await ds.kv.get('ns', 'a')).toBe('1')
      // …and takes everything with it when not.
      await expect(
        ds.tx(async (t) => {
          await t.kv.put('ns', 'b', '1')
          await t.nodes.upsert({
            agentId: 'spiffe://corp.example/a',
            attestor: 'tpm',
            selectors: [],
            serial: '01',
            previousSerial: '',
            expiresAt: 1,
            banned: false,
            canReattest: true,
          })
          await t.entries.create(newEntry({ spiffeId: 'spiffe://corp.example/x', selectors: sel('boom') }))
        }),
      ).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      expect(await ds.kv.get('ns', 'b')).toBeUndefined()
      expect(await ds.nodes.count()).toBe(0)
      expect(await ds.entries.count()).toBe(1)
      await ds.close()
    })

    it('a transaction whose connection is lost commits nothing and says so; the store goes on', async () => {
      const db = await cluster.createDatabase('lost')
      const ds = await open(db)
      const err = await ds
        .tx(async (t) => {
          await t.entries.create(newEntry())
          await t.kv.put('ns', 'k', 'v')
          await cluster.sql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'", [
            db.name,
          ])
          await t.kv.put('ns', 'k2', 'v')
        })
        .catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE', message: expect.stringContaining('PostgreSQL is unavailable') })
      expect(await ds.entries.count()).toBe(0)
      expect(await ds.kv.list('ns')).toEqual([])
      await ds.kv.put('ns', 'after', 'v')
      expect(await ds.kv.get('ns', 'after')).toBe('v')
      await ds.close()
    })
  })

  describe('availability', () => {
    it('while PostgreSQL is stopped, operations fail with ERR_DATASTORE_UNAVAILABLE (no crash); after a restart they work again', async () => {
      const db = await cluster.createDatabase('restart')
      const log = captureLogger()
      const ds = await open(db, { log })
      const e = await ds.entries.create(newEntry())
      await cluster.stop()
      try {
        for (const call of [
          () => ds.entries.get(e.id),
          () => ds.entries.list(),
          () => ds.kv.put('ns', 'k', 'v'),
          () => ds.entries.create(newEntry({ selectors: sel('uid:2') })),
          () => ds.tx(async (t) => t.kv.put('ns', 'k', 'v')),
        ]) {
          await expect(call()).rejects.toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE', message: expect.stringContaining('PostgreSQL is unavailable') })
        }
      } finally {
        await cluster.start()
      }
      expect(await ds.entries.get(e.id)).toEqual(e)
      await ds.kv.put('ns', 'k', 'v')
      expect(await ds.kv.get('ns', 'k')).toBe('v')
      await ds.tx(async (t) => t.kv.put('ns', 'k2', 'v'))
      expect(await ds.kv.list('ns')).toHaveLength(2)
      expect(log.lines.some((l) => l.level === 'warn' && l.msg === 'PostgreSQL connection lost')).toBe(true)
      expect(log.lines.some((l) => l.level === 'info' && l.msg === 'PostgreSQL reachable again')).toBe(true)
      await ds.close()
    })
  })

  describe.runIf(requireTools('openssl'))('TLS', () => {
    let tlsCluster: PostgresCluster
    beforeAll(async () => {
      tlsCluster = await startPostgresCluster({ tls: true })
    })
    afterAll(async () => {
      await tlsCluster?.destroy()
    })
    let app = ''
    const config = (tls: Record<string, unknown> | undefined) => {
      const pwFile = join(tmp.dir, 'tls-password')
      writeFileSync(pwFile, tlsCluster.password, { mode: 0o600 })
      app = `tls-${Math.random().toString(36).slice(2)}`
      return postgresDataStorePlugin.parseConfig({
        connection_string: `${tlsCluster.url('postgres')}?application_name=${app}`,
        password_file: pwFile,
        ...(tls ? { tls } : {}),
      })
    }
    /** Whether each of the store's connections uses TLS. */
    const sslInUse = async () => [
      ...new Set(
        (
          await tlsCluster.sql<{ ssl: boolean }>(
            'postgres',
            'SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1',
            [app],
          )
        ).map((r) => r.ssl),
      ),
    ]

    it('with ca_file the connection is TLS, verified against that CA', async () => {
      const ca = join(tmp.dir, 'pg-ca.pem')
      writeFileSync(ca, tlsCluster.caPem as string)
      const ds = await postgresDataStorePlugin.create(config({ ca_file: ca }), deps())
      await ds.kv.put('ns', 'k', 'v')
      expect(await sslInUse()).toEqual([true])
      await ds.close()
    })

    it('a server certificate that does not verify is refused with a clear reason', async () => {
      // require = true without ca_file: the system roots, which do not know this CA
      await expect(postgresDataStorePlugin.create(config({ require: true }), deps())).rejects.toMatchObject({
        code: 'ERR_DATASTORE_UNAVAILABLE',
        message: expect.stringMatching(/cannot connect to PostgreSQL .*(CERT|SIGNATURE|ISSUER)/),
      })
    })

    it('a loopback host needs no TLS by default; require = true insists on it', async () => {
      const ds = await postgresDataStorePlugin.create(config(undefined), deps())
      await ds.kv.put('ns', 'k', 'v')
      expect(await sslInUse()).toEqual([false])
      await ds.close()
      await expect(
        postgresDataStorePlugin.create(postgresDataStorePlugin.parseConfig({ connection_string: cluster.url('postgres'), tls: { require: true } }), deps()),
      ).rejects.toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE', message: expect.stringContaining('TLS') })
    })
  })
})

describe('postgres connection settings', () => {
  it('TLS is required and verified by default for a remote host, not for a socket or loopback', () => {
    const target = (s: string) => checkConnectionString(s).target!
    expect(sslOptions(target('postgresql://u@db.corp.example/w'), undefined)).toEqual({ rejectUnauthorized: true })
    expect(sslOptions(target('postgresql://u@db.corp.example/w'), { require: false })).toBe(false)
    expect(sslOptions(target('postgresql://u@db.corp.example/w'), { ca: 'PEM' })).toEqual({ rejectUnauthorized: true, ca: 'PEM' })
    expect(sslOptions(target('postgresql://u@127.0.0.1:5432/w'), undefined)).toBe(false)
    expect(sslOptions(target('postgresql://u@localhost/w'), { ca: 'PEM' })).toEqual({ rejectUnauthorized: true, ca: 'PEM' })
    expect(sslOptions(target('postgresql://u@%2Fvar%2Frun%2Fpostgresql/w'), undefined)).toBe(false)
    expect(sslOptions(target('postgresql:///w?host=/run/pg&user=u'), undefined)).toBe(false)
  })

  it('reads host, port, database and user, whichever form they take', () => {
    expect(checkConnectionString('postgresql://w%40x@[::1]:6432/my%20db?application_name=a').target).toEqual({
      host: '::1',
      port: '6432',
      database: 'my db',
      user: 'w@x',
      applicationName: 'a',
      local: true,
    })
    expect(checkConnectionString('postgres:///w?host=/run/pg&user=u&port=7').target).toMatchObject({ host: '/run/pg', port: '7', user: 'u', database: 'w' })
    expect(checkConnectionString('postgresql://u@h/db?port=x').issues).toEqual([{ path: 'connection_string', message: 'has an invalid port' }])
  })
})
