/**
 * A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` of the
 * newest Debian `postgresql` package (/usr/lib/postgresql/<version>/bin), in
 * a temporary directory, on a free TCP port of 127.0.0.1 with its Unix socket
 * in that directory. As root (CI) the cluster runs as the unprivileged
 * `postgres` user, since initdb and the server refuse to run as root.
 *
 * Authentication: the Unix socket trusts every local user (the helper's own
 * admin connections); TCP needs the superuser's generated password (SCRAM),
 * which `password` holds, so tests exercise password authentication as a
 * server would. With `tls`, the server also offers TLS with a certificate for
 * 127.0.0.1 issued by a throwaway CA (`caPem`). fsync is off: the cluster is
 * thrown away.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, appendFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from './e2e-procs.js'

const PG_ROOT = '/usr/lib/postgresql'

/** The bin directory of the newest installed PostgreSQL, or undefined when none is installed. */
export function postgresBinDir(): string | undefined {
  let versions: number[]
  try {
    versions = readdirSync(PG_ROOT)
      .filter((d) => /^\d+(\.\d+)?$/.test(d) && existsSync(join(PG_ROOT, d, 'bin', 'initdb')) && existsSync(join(PG_ROOT, d, 'bin', 'pg_ctl')))
      .map(Number)
  } catch {
    return undefined
  }
  if (versions.length === 0) return undefined
  return join(PG_ROOT, String(Math.max(...versions)), 'bin')
}

/**
 * True when PostgreSQL is installed. For `describe.runIf(requirePostgres())`:
 * outside CI a missing PostgreSQL skips; in CI (`CI=true`) it throws, so the
 * run fails instead of skipping.
 */
export function requirePostgres(): boolean {
  if (postgresBinDir() !== undefined) return true
  if (process.env.CI === 'true') throw new Error(`PostgreSQL is not installed (${PG_ROOT}/<version>/bin); CI must install it (scripts/install-system-deps.sh)`)
  return false
}

export interface PostgresDatabase {
  name: string
  /** `postgresql://postgres@127.0.0.1:<port>/<name>`: no password in it (see `password`). */
  connectionString: string
  drop(): Promise<void>
}

export interface PostgresCluster {
  readonly dir: string
  readonly port: number
  /** The Unix socket directory. */
  readonly socketDir: string
  /** The superuser's name and its generated password (TCP connections need it). */
  readonly user: string
  readonly password: string
  /** With `tls`: the CA that issued the server's certificate (PEM). */
  readonly caPem: string | undefined
  /** `postgresql://postgres@127.0.0.1:<port>/<db>` (no password in it). */
  url(db: string): string
  /** A fresh database (named after `prefix` and a counter). */
  createDatabase(prefix?: string): Promise<PostgresDatabase>
  /** A connected superuser session over the Unix socket (end it). */
  connect(db: string): Promise<pg.Client>
  /** Runs SQL as the superuser over the Unix socket (one connection per call). */
  sql<R extends pg.QueryResultRow = pg.QueryResultRow>(db: string, text: string, params?: unknown[]): Promise<R[]>
  /** Stops the server (fast shutdown: open connections are terminated). */
  stop(): Promise<void>
  /** Starts it again on the same port after stop(). */
  start(): Promise<void>
  readonly running: boolean
  /** Stops the server and removes its directory; idempotent. */
  destroy(): Promise<void>
}

/** How a PostgreSQL program runs here: as `postgres` when this process is root, else as this user. */
function runAs(): { prefix: string[]; uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return { prefix: [] }
  const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  return { prefix: ['runuser', '-u', 'postgres', '--'], uid: id('-u'), gid: id('-g') }
}

function run(cmd: string[], what: string): void {
  const [exe, ...args] = cmd as [string, ...string[]]
  const r = spawnSync(exe, args, { encoding: 'utf8', timeout: 60_000, cwd: '/' })
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal ?? r.error?.message}): ${r.stderr || r.stdout}`)
}

const started = new Set<PostgresCluster>()
let exitHook = false

/** A CA and a server certificate for 127.0.0.1 / localhost (openssl), in `dir`. */
function makeCertificates(dir: string): { caPem: string; cert: string; key: string } {
  const f = (n: string): string => join(dir, n)
  const ext = f('san.ext')
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n')
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  run(['openssl', 'req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=warrant test CA'], 'openssl (CA)')
  run(['openssl', 'req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1'], 'openssl (CSR)')
  run(
    [
      'openssl',
      'x509',
      '-req',
      '-in',
      f('server.csr'),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f('server.pem'),
      '-days',
      '2',
      '-extfile',
      ext,
    ],
    'openssl (certificate)',
  )
  chmodSync(f('server.key'), 0o600)
  return { caPem: readFileSync(f('ca.pem'), 'utf8'), cert: f('server.pem'), key: f('server.key') }
}

/**
 * Starts a cluster (about a second). Throws when PostgreSQL is not installed:
 * check `postgresBinDir()` first to skip instead.
 */
export async function startPostgresCluster(opts: { tls?: boolean } = {}): Promise<PostgresCluster> {
  const bin = postgresBinDir()
  if (bin === undefined) throw new Error(`PostgreSQL is not installed (no ${PG_ROOT}/<version>/bin/initdb); run scripts/install-system-deps.sh`)
  const as = runAs()
  const dir = mkdtempSync(join(tmpdir(), 'w-pg-'))
  const data = join(dir, 'data')
  const password = randomBytes(18).toString('base64url')
  const pwfile = join(dir, 'pwfile')
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 })
  if (as.uid !== undefined && as.gid !== undefined) {
    chownSync(dir, as.uid, as.gid)
    chownSync(pwfile, as.uid, as.gid)
  }
  chmodSync(dir, 0o700)
  try {
    run(
      [
        ...as.prefix,
        join(bin, 'initdb'),
        '-D',
        data,
        '-U',
        'postgres',
        '--pwfile',
        pwfile,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E',
        'UTF8',
        // A non-C locale on purpose: the datastore must order keys itself (COLLATE "C"), whatever the database's collation.
        `--locale=${hasLocale('en_US.UTF-8') ? 'en_US.UTF-8' : 'C.UTF-8'}`,
        '--no-sync',
      ],
      'initdb',
    )
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  rmSync(pwfile, { force: true })
  let caPem: string | undefined
  const tlsConf: string[] = []
  if (opts.tls === true) {
    const certs = makeCertificates(data)
    caPem = certs.caPem
    if (as.uid !== undefined && as.gid !== undefined) for (const p of [certs.cert, certs.key]) chownSync(p, as.uid, as.gid)
    tlsConf.push('ssl = on', `ssl_cert_file = '${certs.cert}'`, `ssl_key_file = '${certs.key}'`)
  }
  const user = 'postgres'
  let port = 0
  let running = false
  const log = join(dir, 'server.log')

  const ctl = (args: string[], what: string): void => run([...as.prefix, join(bin, 'pg_ctl'), '-D', data, ...args], what)

  const cluster: PostgresCluster = {
    dir,
    get port() {
      return port
    },
    socketDir: dir,
    user,
    password,
    caPem,
    get running() {
      return running
    },
    url: (db) => `postgresql://${user}@127.0.0.1:${port}/${encodeURIComponent(db)}`,
    async createDatabase(prefix = 'db') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${++dbCounter}_${randomBytes(3).toString('hex')}`
      await cluster.sql('postgres', `CREATE DATABASE "${name}"`)
      return {
        name,
        connectionString: cluster.url(name),
        drop: async () => {
          if (!running) return
          await cluster.sql('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
        },
      }
    },
    async connect(db: string) {
      const c = new pg.Client({ host: dir, port, user, database: db })
      c.on('error', () => {})
      await c.connect()
      return c
    },
    async sql<R extends pg.QueryResultRow>(db: string, text: string, params?: unknown[]): Promise<R[]> {
      const c = await cluster.connect(db)
      try {
        return (await c.query<R>(text, params)).rows
      } finally {
        await c.end().catch(() => {})
      }
    },
    async start() {
      if (running) return
      ctl(['-l', log, '-w', '-t', '60', 'start'], 'pg_ctl start')
      running = true
    },
    async stop() {
      if (!running) return
      ctl(['-m', 'fast', '-w', '-t', '60', 'stop'], 'pg_ctl stop')
      running = false
    },
    async destroy() {
      started.delete(cluster)
      try {
        if (running) ctl(['-m', 'immediate', '-w', '-t', '60', 'stop'], 'pg_ctl stop')
      } finally {
        running = false
        rmSync(dir, { recursive: true, force: true })
      }
    },
  }

  // A free port: the server binds it a moment later, so a lost race is retried with another one.
  for (let attempt = 0; ; attempt++) {
    port = await freePort()
    appendFileSync(
      join(data, 'postgresql.conf'),
      [
        '',
        '# warrant test cluster',
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        'max_connections = 200',
        'shared_buffers = 32MB',
        "log_min_messages = 'warning'",
        ...tlsConf,
        '',
      ].join('\n'),
    )
    try {
      await cluster.start()
      break
    } catch (err) {
      const text = existsSync(log) ? readFileSync(log, 'utf8') : ''
      if (attempt >= 4 || !/could not bind|Address already in use/i.test(text)) {
        rmSync(dir, { recursive: true, force: true })
        throw err
      }
    }
  }
  started.add(cluster)
  if (!exitHook) {
    exitHook = true
    // A test process that dies without destroy() still takes its servers down.
    process.once('exit', () => {
      for (const c of started) {
        const cmd = [...as.prefix, join(bin, 'pg_ctl'), '-D', join(c.dir, 'data'), '-m', 'immediate', 'stop']
        spawnSync(cmd[0] as string, cmd.slice(1), { stdio: 'ignore', cwd: '/' })
        rmSync(c.dir, { recursive: true, force: true })
      }
    })
  }
  return cluster
}

let dbCounter = 0

function hasLocale(name: string): boolean {
  const r = spawnSync('locale', ['-a'], { encoding: 'utf8' })
  if (r.status !== 0) return false
  const want = name.toLowerCase().replace(/[^a-z0-9]/g, '')
  return r.stdout.split('\n').some((l) => l.toLowerCase().replace(/[^a-z0-9]/g, '') === want)
}
