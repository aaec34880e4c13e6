/**
 * `warrant server run` as a real process, driven through the admin CLI over
 * its Unix socket: entry CRUD with --output json, bad input (coded errors,
 * non-zero exit, nothing written), join tokens, bundles, validate,
 * healthcheck and the socket's permissions.
 */
import { statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { runCli, ServerProcess } from '../helpers/server-process.js'
import { tempDir } from '../helpers/temp.js'

interface EntryJson {
  id: string
  spiffe_id: string
  parent_id: string
  selectors: { type: string; value: string }[]
  x509_svid_ttl: number
  revision: string
}
interface BatchJson {
  results: { status: { code: number; error_code: string; message: string }; entry: EntryJson | null }[]
}

const TD = 'example.org'
const SERVER_ID = `spiffe://${TD}/warrant/server`

describe('warrant server (process) via the admin CLI', () => {
  let srv: ServerProcess

  beforeAll(async () => {
    srv = await ServerProcess.start()
  })
  afterAll(async () => {
    await srv?.dispose()
  })

  const count = async () => (await srv.cliJson<{ count: number }>(['entry', 'count'])).count

  it('creates, shows, updates, counts and deletes an entry with --output json', async () => {
    const before = await count()
    const created = await srv.cliJson<BatchJson>([
      'entry',
      'create',
      '--spiffe-id',
      `spiffe://${TD}/crud`,
      '--parent-id',
      SERVER_ID,
      '--selector',
      'unix:uid:1000',
      '--selector',
      'unix:gid:50',
      '--x509-svid-ttl',
      '600',
    ])
    expect(created.results).toHaveLength(1)
    expect(created.results[0]!.status.code).toBe(0)
    const e = created.results[0]!.entry!
    expect(e).toMatchObject({ spiffe_id: `spiffe://${TD}/crud`, parent_id: SERVER_ID, x509_svid_ttl: 600 })
    expect(e.selectors).toEqual(
      expect.arrayContaining([
        { type: 'unix', value: 'uid:1000' },
        { type: 'unix', value: 'gid:50' },
      ]),
    )
    expect(await count()).toBe(before + 1)

    const shown = await srv.cliJson<EntryJson>(['entry', 'show', '--id', e.id])
    expect(shown).toMatchObject({ id: e.id, spiffe_id: `spiffe://${TD}/crud`, x509_svid_ttl: 600 })
    const listed = await srv.cliJson<{ entries: EntryJson[] }>(['entry', 'show', '--spiffe-id', `spiffe://${TD}/crud`])
    expect(listed.entries.map((x) => x.id)).toEqual([e.id])
    const bySelector = await srv.cliJson<{ count: number }>(['entry', 'count', '--selector', 'unix:uid:1000', '--match', 'any'])
    expect(bySelector.count).toBe(1)

    const updated = await srv.cliJson<BatchJson>(['entry', 'update', '--id', e.id, '--x509-svid-ttl', '900'])
    expect(updated.results[0]!.status.code).toBe(0)
    expect(updated.results[0]!.entry).toMatchObject({ id: e.id, x509_svid_ttl: 900, spiffe_id: `spiffe://${TD}/crud` })
    expect(Number(updated.results[0]!.entry!.revision)).toBeGreaterThan(Number(e.revision))
    // fields not given are unchanged
    expect(updated.results[0]!.entry!.selectors).toHaveLength(2)

    const deleted = await srv.cliJson<BatchJson>(['entry', 'delete', '--id', e.id])
    expect(deleted.results[0]!.status.code).toBe(0)
    expect(await count()).toBe(before)
    const gone = await srv.cli(['entry', 'show', '--id', e.id, '--output', 'json'])
    expect(gone.code).not.toBe(0)
    expect(gone.stderr).toContain('[ERR_ENTRY_NOT_FOUND]')
  })

  const bad: { title: string; args: string[]; code: string }[] = [
    {
      title: 'a selector without type:value',
      args: ['entry', 'create', '--spiffe-id', `spiffe://${TD}/bad1`, '--parent-id', SERVER_ID, '--selector', 'bad'],
      code: 'ERR_INVALID_ARGUMENT',
    },
    {
      title: 'a SPIFFE ID outside the trust domain',
      args: ['entry', 'create', '--spiffe-id', 'spiffe://other.org/bad2', '--parent-id', SERVER_ID, '--selector', 'unix:uid:1'],
      code: 'ERR_ENTRY_INVALID',
    },
    {
      title: 'a parent that does not exist',
      args: ['entry', 'create', '--spiffe-id', `spiffe://${TD}/bad3`, '--parent-id', `spiffe://${TD}/no/such/parent`, '--selector', 'unix:uid:1'],
      code: 'ERR_ENTRY_INVALID',
    },
    {
      title: 'an X.509-SVID TTL above the CA TTL',
      args: ['entry', 'create', '--spiffe-id', `spiffe://${TD}/bad4`, '--parent-id', SERVER_ID, '--selector', 'unix:uid:1', '--x509-svid-ttl', '99999999'],
      code: 'ERR_ENTRY_INVALID',
    },
    {
      title: 'a negative-looking TTL',
      args: ['entry', 'create', '--spiffe-id', `spiffe://${TD}/bad5`, '--parent-id', SERVER_ID, '--selector', 'unix:uid:1', '--jwt-svid-ttl', '-5'],
      code: 'ERR_INVALID_ARGUMENT',
    },
    { title: 'no selector', args: ['entry', 'create', '--spiffe-id', `spiffe://${TD}/bad6`, '--parent-id', SERVER_ID], code: 'ERR_ENTRY_INVALID' },
    { title: 'show an unknown entry id', args: ['entry', 'show', '--id', 'no-such-entry'], code: 'ERR_ENTRY_NOT_FOUND' },
    { title: 'update an unknown entry id', args: ['entry', 'update', '--id', 'no-such-entry', '--hint', 'x'], code: 'ERR_ENTRY_NOT_FOUND' },
    { title: 'delete an unknown entry id', args: ['entry', 'delete', '--id', 'no-such-entry'], code: 'ERR_ENTRY_NOT_FOUND' },
  ]
  it.each(bad)('rejects $title with [$code], a non-zero exit and no write', async ({ args, code }) => {
    const before = await count()
    const r = await srv.cli(args)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain(`[${code}]`)
    expect(await count()).toBe(before)
  })

  it('reports a per-item error code in --output json for a rejected create', async () => {
    const before = await count()
    const r = await srv.cli([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://other.org/x',
      '--parent-id',
      SERVER_ID,
      '--selector',
      'unix:uid:1',
      '--output',
      'json',
    ])
    expect(r.code).toBe(1)
    const j = JSON.parse(r.stdout) as BatchJson
    expect(j.results[0]!.status.error_code).toBe('ERR_ENTRY_INVALID')
    expect(j.results[0]!.entry).toBeNull()
    expect(await count()).toBe(before)
  })

  it('refuses a --data entry whose string field is not a string (ERR_INVALID_ARGUMENT), and writes nothing', async () => {
    const before = await count()
    const file = join(dirname(srv.configPath), 'entries-bad.json')
    writeFileSync(file, JSON.stringify([{ spiffe_id: { path: '/x' }, parent_id: SERVER_ID, selectors: ['unix:uid:1'] }]))
    const r = await srv.cli(['entry', 'create', '--data', file])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('--data: spiffe_id must be a string')
    expect(await count()).toBe(before)
  })

  it('generates one-use join tokens with an expiry', async () => {
    const t0 = Date.now()
    const a = await srv.cliJson<{ token: string; expires_at: number }>(['token', 'generate', '--ttl', '120'])
    const b = await srv.cliJson<{ token: string; expires_at: number }>(['token', 'generate'])
    expect(a.token).toMatch(/^[A-Za-z0-9_-]{20,}$/)
    expect(a.token).not.toBe(b.token)
    expect(a.expires_at).toBeGreaterThanOrEqual(t0 + 110_000)
    expect(a.expires_at).toBeLessThanOrEqual(Date.now() + 130_000)
    // the token is never logged
    expect(srv.output()).not.toContain(a.token)
    const bad = await srv.cli(['token', 'generate', '--ttl', 'soon'])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain('[ERR_INVALID_ARGUMENT]')
  })

  it('shows the bundle as PEM and as a SPIFFE bundle document, matching bundle.pem', async () => {
    const td = TrustDomain.fromString(TD)
    const pem = await srv.cli(['bundle', 'show', '--format', 'pem'])
    expect(pem.code).toBe(0)
    const x = X509Bundle.parsePem(td, pem.stdout)
    expect(x.authorities.length).toBeGreaterThan(0)
    const file = X509Bundle.parsePem(td, srv.bundlePem())
    expect(x.authorities.map((d) => Buffer.from(d).toString('base64'))).toEqual(file.authorities.map((d) => Buffer.from(d).toString('base64')))

    const doc = await srv.cli(['bundle', 'show', '--format', 'spiffe'])
    expect(doc.code).toBe(0)
    const b = SpiffeBundle.parse(td, doc.stdout)
    expect(b.x509Bundle().authorities.map((d) => Buffer.from(d).toString('base64'))).toEqual(file.authorities.map((d) => Buffer.from(d).toString('base64')))
    expect(b.jwtBundle().keys.size).toBeGreaterThan(0)
    expect(b.sequenceNumber).toBeGreaterThan(0)
  })

  it('healthcheck reports SERVING and fails on a socket nobody serves', async () => {
    const ok = await srv.cli(['server', 'healthcheck', '--output', 'json'])
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout)).toEqual({ healthy: true, status: 'SERVING' })
    const nope = await runCli(['server', 'healthcheck', '--socket', join(srv.dir, 'nobody.sock')])
    expect(nope.code).not.toBe(0)
    expect(nope.stderr).toContain('unhealthy')
  })

  it('serves the admin socket 0600 in a 0700 directory', () => {
    const sock = statSync(srv.socketPath)
    expect(sock.isSocket()).toBe(true)
    expect(sock.mode & 0o777).toBe(0o600)
    expect(statSync(dirname(srv.socketPath)).mode & 0o777).toBe(0o700)
    expect(statSync(srv.dataDir).mode & 0o777).toBe(0o700)
  })
})

describe('warrant server without join_token', () => {
  it('refuses to generate join tokens (ERR_NOT_CONFIGURED): join_token is an attestor like any other, present only when configured', async () => {
    const t = tempDir('wnojt-')
    let srv: ServerProcess | undefined
    try {
      writeFileSync(
        join(t.dir, 'server.toml'),
        [
          '[server]',
          `trust_domain = "${TD}"`,
          'bind_address = "127.0.0.1:0"',
          `data_dir = "${t.dir}/data"`,
          '[plugins.key_manager.disk]',
          'keys_path = "keys"',
          '[plugins.node_attestor.tpm]',
          `ek_hash_allow_list = ["${'ab'.repeat(32)}"]`,
          '',
        ].join('\n'),
      )
      srv = await ServerProcess.start({ dir: t.dir })
      const r = await srv.cli(['token', 'generate'])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain('[ERR_NOT_CONFIGURED]')
    } finally {
      await srv?.dispose()
      t.cleanup()
    }
  })
})

describe('warrant server validate', () => {
  it('accepts the helper configuration', async () => {
    const t = tempDir('wval-')
    try {
      const p = join(t.dir, 'server.toml')
      writeFileSync(
        p,
        `[server]\ntrust_domain = "example.org"\nbind_address = "127.0.0.1:0"\ndata_dir = "${t.dir}/data"\n[plugins.key_manager.disk]\nkeys_path = "keys"\n[plugins.node_attestor.join_token]\n`,
      )
      const r = await runCli(['server', 'validate', '--config', p, '--output', 'json'])
      expect(r.code).toBe(0)
      expect(JSON.parse(r.stdout)).toMatchObject({ valid: true })
    } finally {
      t.cleanup()
    }
  })

  it('reports every problem of a config with several, each with its path', async () => {
    const t = tempDir('wval-')
    try {
      const p = join(t.dir, 'server.toml')
      writeFileSync(
        p,
        [
          '[server]',
          'trust_domain = "Not A Domain!"',
          'bind_address = "127.0.0.1:0"',
          `data_dir = "${t.dir}/data"`,
          'default_x509_svid_ttl = "forever"',
          'surprise = 1',
          '[plugins.key_manager.disk]',
          'keys_path = "keys"',
          '[plugins.node_attestor.join_token]',
          '',
        ].join('\n'),
      )
      const r = await runCli(['server', 'validate', '--config', p, '--output', 'json'])
      expect(r.code).not.toBe(0)
      const j = JSON.parse(r.stdout) as { valid: boolean; issues: { path: string; message: string }[] }
      expect(j.valid).toBe(false)
      const paths = j.issues.map((i) => i.path)
      expect(paths).toEqual(expect.arrayContaining(['server.trust_domain', 'server.default_x509_svid_ttl']))
      expect(paths.some((x) => x === 'server' || x.startsWith('server.surprise') || x === 'server.surprise')).toBe(true)
      expect(j.issues.length).toBeGreaterThanOrEqual(3)

      const pretty = await runCli(['server', 'validate', '--config', p])
      expect(pretty.code).not.toBe(0)
      expect(pretty.stderr).toContain('[ERR_CONFIG_INVALID]')
    } finally {
      t.cleanup()
    }
  })

  it('reports plugin problems together (unknown attestor, bad plugin settings)', async () => {
    const t = tempDir('wval-')
    try {
      const p = join(t.dir, 'server.toml')
      writeFileSync(
        p,
        [
          '[server]',
          'trust_domain = "example.org"',
          `data_dir = "${t.dir}/data"`,
          '[plugins.key_manager.disk]',
          'keys_path = "keys"',
          '[plugins.node_attestor.join_token]',
          'extra = 1',
          '[plugins.node_attestor.x509pop]',
          'wrong_key = "x"',
          '[plugins.node_attestor.no_such_attestor]',
          '',
        ].join('\n'),
      )
      const r = await runCli(['server', 'validate', '--config', p, '--output', 'json'])
      expect(r.code).not.toBe(0)
      const j = JSON.parse(r.stdout) as { valid: boolean; issues: { path: string; message: string }[] }
      const paths = j.issues.map((i) => i.path)
      expect(paths).toEqual(expect.arrayContaining(['plugins.node_attestor.join_token', 'plugins.node_attestor.no_such_attestor']))
      expect(paths.some((x) => x.startsWith('plugins.node_attestor.x509pop'))).toBe(true)
    } finally {
      t.cleanup()
    }
  })

  it('reports a core error and two broken plugin blocks in one pass, each under its full path', async () => {
    const t = tempDir('wval-')
    try {
      const p = join(t.dir, 'server.toml')
      writeFileSync(
        p,
        [
          '[server]',
          'trust_domain = "example.org"',
          `data_dir = "${t.dir}/data"`,
          'ca_ttl = "soon"',
          '[plugins.key_manager.pkcs11]',
          'module_path = "libsofthsm2.so"',
          'token_label = "t"',
          'pin = "1234"',
          '[plugins.node_attestor.tpm]',
          'pcr_bank = "md5"',
          '',
        ].join('\n'),
      )
      const r = await runCli(['server', 'validate', '--config', p, '--output', 'json'])
      expect(r.code).toBe(1)
      const j = JSON.parse(r.stdout) as { valid: boolean; issues: { path: string; message: string }[] }
      expect(j.valid).toBe(false)
      expect(j.issues.map((i) => i.path).sort()).toEqual([
        'plugins.key_manager.pkcs11.pin',
        'plugins.key_manager.pkcs11.pin_file',
        'plugins.node_attestor.tpm.pcr_bank',
        'server.ca_ttl',
      ])
      // the inline PIN is reported by its key, never echoed
      expect(r.stdout).not.toContain('1234')
    } finally {
      t.cleanup()
    }
  })
})
