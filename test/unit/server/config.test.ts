import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { formatDuration, parseDuration } from '../../../src/common/config/duration.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { serverPlugins } from '../../../src/cli/plugins.js'
import { toServerConfig as toServerConfigWith, type ServerConfig } from '../../../src/server/config.js'
import { tempDir } from '../../helpers/temp.js'

const BASE = '/etc/warrant'
const toServerConfig = (raw: unknown, base: string) => toServerConfigWith(raw, base, serverPlugins)
const names = (list: readonly { name: string }[]) => list.map((p) => p.name)
type Issue = { path: string; message: string }

function issues(raw: unknown, base = BASE): Issue[] {
  try {
    toServerConfig(raw, base)
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    expect((err as IdentityError).code).toBe('ERR_CONFIG_INVALID')
    const list = (err as IdentityError).details!.issues as Issue[]
    for (const i of list) expect((err as IdentityError).message).toContain(i.path)
    return list
  }
  throw new Error('expected ERR_CONFIG_INVALID')
}

const server = (extra: Record<string, unknown> = {}) => ({ server: { trust_domain: 'example.org', ...extra } })
const cfg = (extra: Record<string, unknown> = {}, top: Record<string, unknown> = {}): ServerConfig => toServerConfig({ ...server(extra), ...top }, BASE)

describe('toServerConfig defaults', () => {
  it('fills every default from a minimal file', () => {
    const c = cfg()
    expect(c.trustDomain.name).toBe('example.org')
    expect(c.caTtlMs).toBe(24 * 3_600_000)
    expect(c.defaultX509TtlMs).toBe(3_600_000)
    expect(c.defaultJwtTtlMs).toBe(300_000)
    expect(c.agentTtlMs).toBe(c.defaultX509TtlMs)
    expect(c.refreshHintSeconds).toBe(300)
    expect(c.rotationCheckIntervalMs).toBe(10_000)
    expect(c.dataDir).toBe('/etc/warrant/.warrant/server')
    expect(c.socketPath).toBe('/etc/warrant/.warrant/server/private/admin.sock')
    // the registration's defaults: disk keys under data_dir/keys, SQLite in data_dir, join tokens
    expect(c.plugins.datastore).toMatchObject({ type: 'datastore', name: 'sqlite', label: 'datastore(sqlite)', config: {} })
    expect(c.plugins.keyManager).toMatchObject({ type: 'key_manager', name: 'disk', label: 'keymanager(disk)', config: { keys_path: 'keys' } })
    expect(names(c.plugins.nodeAttestors)).toEqual(['join_token'])
    expect(c.bindAddress).toEqual({ host: '127.0.0.1', port: 8081 })
    expect(c).toMatchObject({
      logLevel: 'info',
      logFormat: 'json',
      caKeyType: 'ec-p256',
      jwtKeyType: 'ec-p256',
      jwtIssuer: undefined,
      upstream: undefined,
      health: undefined,
      metrics: undefined,
      federation: undefined,
      caSubject: undefined,
    })
    expect(c.notes).toEqual([])
  })

  it('places the socket under <data_dir>/private/admin.sock for an absolute data_dir', () => {
    const c = cfg({ data_dir: '/var/lib/warrant' })
    expect(c.dataDir).toBe('/var/lib/warrant')
    expect(c.socketPath).toBe('/var/lib/warrant/private/admin.sock')
  })

  it('takes explicit plugin choices', () => {
    const c = cfg({}, { plugins: { key_manager: { memory: {} }, datastore: { memory: {} }, node_attestor: { join_token: {}, tpm: { ek_ca_paths: ['x'] } } } })
    expect(c.plugins.keyManager.name).toBe('memory')
    expect(c.plugins.datastore.name).toBe('memory')
    expect(names(c.plugins.nodeAttestors)).toEqual(['join_token', 'tpm'])
    expect(c.plugins.nodeAttestors[1]!.config).toMatchObject({ ekCaPaths: ['/etc/warrant/x'] })
  })

  it('agent_ttl, health, metrics and ca_subject', () => {
    const c = cfg({
      agent_ttl: '2h',
      health_checks: { bind_address: ':8080' },
      metrics: { bind_address: '0.0.0.0:9090' },
      ca_subject: { organization: 'Acme', common_name: 'Acme CA' },
      bind_address: '[::1]:9000',
    })
    expect(c.agentTtlMs).toBe(7_200_000)
    expect(c.health).toEqual({ host: '127.0.0.1', port: 8080, livePath: '/live', readyPath: '/ready' })
    expect(c.metrics).toEqual({ host: '0.0.0.0', port: 9090 })
    expect(c.caSubject).toEqual({ organization: 'Acme', commonName: 'Acme CA' })
    expect(c.bindAddress).toEqual({ host: '::1', port: 9000 })
  })
})

describe('toServerConfig attestation limits', () => {
  it('defaults to 64 concurrent attestations, 16 per source address; both can be set', () => {
    expect(cfg().attestationLimits).toEqual({ maxConcurrent: 64, maxConcurrentPerAddress: 16 })
    expect(cfg({ max_concurrent_attestations: 8, max_concurrent_attestations_per_address: 2 }).attestationLimits).toEqual({
      maxConcurrent: 8,
      maxConcurrentPerAddress: 2,
    })
  })
})

describe('toServerConfig durations', () => {
  it.each([
    ['90s', 90_000],
    ['1h30m', 5_400_000],
    ['7d', 7 * 86_400_000],
    ['250ms', 250],
    [3600, 3_600_000],
    [1.5, 1_500],
  ])('rotation_check_interval %s → %s ms', (v, ms) => {
    expect(cfg({ rotation_check_interval: v }).rotationCheckIntervalMs).toBe(ms)
  })

  it.each([
    ['1h30m', 5_400_000],
    [7200, 7_200_000],
  ])('ca_ttl %s → %s ms', (v, ms) => {
    expect(cfg({ ca_ttl: v }).caTtlMs).toBe(ms)
  })

  it.each(['5', '1x', '-5s', '', 'h', '1h 30m', '1.h', -1, Number.NaN, true])('refuses %s', (v) => {
    expect(issues(server({ ca_ttl: v })).map((i) => i.path)).toEqual(['server.ca_ttl'])
  })

  it.each([
    ['ca_ttl', '30s', 'server.ca_ttl'],
    ['default_x509_svid_ttl', '500ms', 'server.default_x509_svid_ttl'],
    ['default_jwt_svid_ttl', 0, 'server.default_jwt_svid_ttl'],
  ])('refuses %s below its minimum', (key, v, path) => {
    expect(issues(server({ [key]: v })).map((i) => i.path)).toContain(path)
  })
})

describe('toServerConfig refusals', () => {
  it.each<{ title: string; raw: unknown; path: string; message?: RegExp }>([
    { title: 'unknown top-level key', raw: { ...server(), agent: {} }, path: '(root)', message: /agent/ },
    { title: 'unknown server key', raw: server({ ca_tll: '1h' }), path: 'server', message: /ca_tll/ },
    { title: 'unknown ca_subject key', raw: server({ ca_subject: { country: 'FR' } }), path: 'server.ca_subject', message: /country/ },
    {
      title: 'unknown upstream_authority key',
      raw: server({ upstream_authority: { cert_file: 'a', key_file: 'b', pin: 'x' } }),
      path: 'server.upstream_authority',
      message: /pin/,
    },
    { title: 'unknown health_checks key', raw: server({ health_checks: { bind_address: ':1', extra: 1 } }), path: 'server.health_checks', message: /extra/ },
    {
      title: 'unknown plugin kind',
      raw: { ...server(), plugins: { workload_attestor: {} } },
      path: 'plugins.workload_attestor',
      message: /unknown plugin type/,
    },
    {
      title: 'join_token takes no settings',
      raw: { ...server(), plugins: { node_attestor: { join_token: { ttl: '1h' } } } },
      path: 'plugins.node_attestor.join_token',
      message: /ttl/,
    },
    {
      title: 'a plugin block that is not a table',
      raw: { ...server(), plugins: { node_attestor: { join_token: 'yes' } } },
      path: 'plugins.node_attestor.join_token',
      message: /table/,
    },
    { title: 'a tpm block without EK trust', raw: { ...server(), plugins: { node_attestor: { tpm: {} } } }, path: 'plugins.node_attestor.tpm.ek_ca_paths' },
    { title: 'a disk key manager without keys_path', raw: { ...server(), plugins: { key_manager: { disk: {} } } }, path: 'plugins.key_manager.disk.keys_path' },
    {
      title: 'unknown sqlite option',
      raw: { ...server(), plugins: { datastore: { sqlite: { journal: 'wal' } } } },
      path: 'plugins.datastore.sqlite',
      message: /journal/,
    },
    { title: 'missing trust_domain', raw: { server: {} }, path: 'server.trust_domain' },
    { title: 'missing server section', raw: {}, path: 'server' },
    { title: 'bad trust_domain', raw: server({ trust_domain: 'Not A TD' }), path: 'server.trust_domain' },
    { title: 'bad bind_address', raw: server({ bind_address: 'localhost' }), path: 'server.bind_address' },
    { title: 'bad key type', raw: server({ ca_key_type: 'dsa' }), path: 'server.ca_key_type' },
    { title: 'bad log level', raw: server({ log_level: 'trace' }), path: 'server.log_level' },
    {
      title: 'more than one key manager',
      raw: { ...server(), plugins: { key_manager: { memory: {}, disk: {} } } },
      path: 'plugins.key_manager',
      message: /exactly one/,
    },
    { title: 'unknown key manager', raw: { ...server(), plugins: { key_manager: { vault: {} } } }, path: 'plugins.key_manager.vault' },
    { title: 'more than one datastore', raw: { ...server(), plugins: { datastore: { memory: {}, sqlite: {} } } }, path: 'plugins.datastore' },
    { title: 'no node attestor', raw: { ...server(), plugins: { node_attestor: {} } }, path: 'plugins.node_attestor' },
    { title: 'socket path too long', raw: server({ socket_path: `/${'s'.repeat(120)}.sock` }), path: 'server.socket_path' },
    { title: 'zero concurrent attestations', raw: server({ max_concurrent_attestations: 0 }), path: 'server.max_concurrent_attestations' },
    {
      title: 'fractional attestations per address',
      raw: server({ max_concurrent_attestations_per_address: 1.5 }),
      path: 'server.max_concurrent_attestations_per_address',
    },
  ])('$title → ERR_CONFIG_INVALID at $path', ({ raw, path, message }) => {
    const list = issues(raw)
    const hit = list.find((i) => i.path === path)
    expect(hit, JSON.stringify(list)).toBeDefined()
    if (message) expect(hit!.message).toMatch(message)
  })

  it('reports several schema problems together', () => {
    const list = issues({ server: { trust_domain: 'example.org', ca_ttl: 'soon', bogus: 1, log_level: 'loud', ca_subject: { x: 1 } }, extra: true })
    expect(list.map((i) => i.path).sort()).toEqual(['(root)', 'server', 'server.ca_subject', 'server.ca_ttl', 'server.log_level'])
  })

  it('reports several cross-field and plugin problems together', () => {
    const list = issues({
      ...server({ ca_ttl: '30s', default_jwt_svid_ttl: '10ms' }),
      plugins: { key_manager: { memory: {}, pkcs11: {} }, datastore: { mysql: {} } },
    })
    expect(list.map((i) => i.path).sort()).toEqual([
      'plugins.datastore.mysql',
      'plugins.key_manager',
      'plugins.key_manager.pkcs11.module_path',
      'plugins.key_manager.pkcs11.pin_file',
      'plugins.key_manager.pkcs11.token_label',
      'server.ca_ttl',
      'server.default_jwt_svid_ttl',
    ])
  })

  it('reports a core schema error and two broken plugin blocks in one pass', () => {
    const list = issues({
      server: { trust_domain: 'example.org', ca_ttl: 'soon' },
      plugins: { node_attestor: { tpm: { pcr_bank: 'md5' } }, key_manager: { pkcs11: { module_path: 'libsofthsm2.so', slot: -1, pin_file: 'pin' } } },
    })
    expect(list.map((i) => i.path).sort()).toEqual(['plugins.key_manager.pkcs11.slot', 'plugins.node_attestor.tpm.pcr_bank', 'server.ca_ttl'])
    expect(list.find((i) => i.path === 'plugins.node_attestor.tpm.pcr_bank')!.message).toMatch(/sha256/)
  })
})

describe('toServerConfig paths and notes', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('wcfg-')
  })
  afterEach(() => tmp.cleanup())

  it('resolves relative paths against the base dir (sqlite path against the data dir)', () => {
    const c = toServerConfig(
      {
        server: { trust_domain: 'example.org', data_dir: 'data', socket_path: 'run/admin.sock' },
        plugins: { datastore: { sqlite: { path: 'db/x.sqlite3' } } },
      },
      tmp.dir,
    )
    expect(c.dataDir).toBe(join(tmp.dir, 'data'))
    expect(c.socketPath).toBe(join(tmp.dir, 'run/admin.sock'))
    // the sqlite path is the data dir's (the plugin resolves it there), not the config file's
    expect(c.plugins.datastore.config).toEqual({ path: 'db/x.sqlite3' })
    const abs = toServerConfig(
      {
        server: { trust_domain: 'example.org', data_dir: '/srv/w', socket_path: '/run/w.sock' },
        plugins: { datastore: { sqlite: { path: '/db/x.sqlite3' } } },
      },
      tmp.dir,
    )
    expect(abs).toMatchObject({ dataDir: '/srv/w', socketPath: '/run/w.sock', plugins: { datastore: { config: { path: '/db/x.sqlite3' } } } })
  })

  it('upstream_authority files are resolved and must exist', () => {
    writeFileSync(join(tmp.dir, 'up.pem'), 'x')
    writeFileSync(join(tmp.dir, 'up.key'), 'x')
    const c = toServerConfig(server({ upstream_authority: { cert_file: 'up.pem', key_file: 'up.key' } }), tmp.dir)
    expect(c.upstream).toEqual({ certFile: resolve(tmp.dir, 'up.pem'), keyFile: resolve(tmp.dir, 'up.key'), bundleFile: undefined })
    const list = issues(server({ upstream_authority: { cert_file: 'up.pem', key_file: 'missing.key', bundle_file: '/nonexistent/b.pem' } }), tmp.dir)
    expect(list.map((i) => i.path).sort()).toEqual(['server.upstream_authority.bundle_file', 'server.upstream_authority.key_file'])
  })

  it.each([
    { title: 'no note with defaults', extra: {}, notes: 0 },
    { title: 'X.509 TTL over ca_ttl/6', extra: { ca_ttl: '1h', default_x509_svid_ttl: '11m' }, notes: 1, match: /default_x509_svid_ttl/ },
    { title: 'X.509 TTL at exactly ca_ttl/6', extra: { ca_ttl: '1h', default_x509_svid_ttl: '10m' }, notes: 0 },
    {
      title: 'both TTLs over ca_ttl/6',
      extra: { ca_ttl: '1h', default_x509_svid_ttl: '1h', default_jwt_svid_ttl: '20m' },
      notes: 2,
      match: /default_jwt_svid_ttl/,
    },
  ])('notes: $title', ({ extra, notes, match }) => {
    const c = cfg(extra)
    expect(c.notes).toHaveLength(notes)
    if (match) expect(c.notes.join('\n')).toMatch(match)
  })
})

// parseDuration / formatDuration (src/common/config/duration.ts), the parser behind every duration key above
describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['1s', 1000],
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['1h30m15s', 5_415_000],
    ['24h', 86_400_000],
    ['7d', 604_800_000],
    ['1.5s', 1500],
    ['0s', 0],
    ['1m1ms', 60_001],
  ])('%s → %d ms', (s, ms) => {
    expect(parseDuration(s)).toBe(ms)
  })

  it.each(['', '5', 's', '1x', '-1s', '+1s', '1h 30m', ' 1h', '1H', '1.s', '.5s', '1e3s', 'x'.repeat(65), '1h-'])('rejects %j', (s) => {
    expect(parseDuration(s)).toBeUndefined()
  })

  it('rejects a non-string', () => {
    expect(parseDuration(5 as unknown as string)).toBeUndefined()
  })
})

describe('formatDuration', () => {
  it.each([
    [250, '250ms'],
    [1000, '1s'],
    [90_000, '90s'],
    [300_000, '5m'],
    [5_400_000, '90m'],
    [3_600_000, '1h'],
    [86_400_000, '1d'],
    [90_000_000, '25h'],
    [0, '0s'],
    [1500, '1500ms'],
  ])('%d ms → %s', (ms, s) => {
    expect(formatDuration(ms)).toBe(s)
  })

  it.each([250, 1000, 90_000, 5_400_000, 86_400_000, 3 * 86_400_000, 61_001])('round-trips %d', (ms) => {
    expect(parseDuration(formatDuration(ms))).toBe(ms)
  })
})

describe('toServerConfig plugin paths', () => {
  it('resolves relative plugin file paths against the config directory; keys_path stays under data_dir, a bare module name with the loader', () => {
    const c = cfg(
      {},
      {
        plugins: {
          key_manager: { disk: { keys_path: 'keys' } },
          node_attestor: { x509pop: { ca_bundle_path: ['pki/ca.pem', '/abs/ca2.pem'] }, tpm: { ek_ca_paths: ['tpm/root.pem'] } },
        },
      },
    )
    expect(c.plugins.keyManager.config).toEqual({ keys_path: 'keys' })
    expect(names(c.plugins.nodeAttestors)).toEqual(['x509pop', 'tpm'])
    expect(c.plugins.nodeAttestors[0]!.config).toEqual({ caBundlePaths: ['/etc/warrant/pki/ca.pem', '/abs/ca2.pem'] })
    expect(c.plugins.nodeAttestors[1]!.config).toMatchObject({ ekCaPaths: ['/etc/warrant/tpm/root.pem'] })
    const hsm = cfg({}, { plugins: { key_manager: { pkcs11: { module_path: 'libsofthsm2.so', token_label: 't', pin_file: '../secrets/pin' } } } })
    expect(hsm.plugins.keyManager.config).toEqual({ module_path: 'libsofthsm2.so', token_label: 't', pin_file: '/etc/secrets/pin' })
  })
})
