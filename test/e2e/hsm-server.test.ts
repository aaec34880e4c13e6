/**
 * The server CA held in an HSM, end to end: a `warrant server run` process
 * with `[plugins.key_manager.pkcs11]` over a fresh SoftHSM2 token issues SVIDs
 * to a real agent process; the token holds the CA and JWT keys as private,
 * sensitive, non-extractable objects (inspected here with pkcs11js); a restart
 * keeps the same keys; rotation (ca_ttl = 1m, the minimum) creates new token
 * keys and destroys the retired ones once they expire out of the bundle; a
 * wrong PIN stops `server run` with ERR_HSM_LOGIN_FAILED. Runtime ≈ 70 s,
 * bounded by the 1-minute CA lifetime.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pkcs11js from 'pkcs11js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { provisionSoftHsm, type ProvisionedSoftHsm } from '../../src/dev/softhsm.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { verifyX509Svid } from '../../src/spiffe/x509-svid/verify.js'
import { E2eAgent, E2eServer, e2eServerToml, fetchX509Until, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'hsm.example'
const td = TrustDomain.fromString(TD)

interface TokenObject {
  label: string
  cls: 'private' | 'public'
  private: boolean
  sensitive: boolean | undefined
  extractable: boolean | undefined
  /** C_GetAttributeValue(CKA_VALUE) error name (private keys only). */
  valueRead: string | undefined
}

const bool = (b: Buffer | undefined) => (b === undefined ? undefined : b.length > 0 && b[0] !== 0)

/**
 * Lists the token's `warrant-` key objects from this process (initialize,
 * log in, find, finalize each time, so objects another process created or
 * destroyed are seen).
 */
function inspectToken(hsm: ProvisionedSoftHsm): TokenObject[] {
  process.env.SOFTHSM2_CONF = hsm.confPath
  const p = new pkcs11js.PKCS11()
  p.load(hsm.modulePath)
  p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
  try {
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === hsm.tokenLabel)
    if (slot === undefined) throw new Error('token not found')
    const s = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)
    try {
      p.C_Login(s, pkcs11js.CKU_USER, readFileSync(hsm.pinFile, 'utf8').trim())
      const out: TokenObject[] = []
      for (const [cls, name] of [
        [pkcs11js.CKO_PRIVATE_KEY, 'private'],
        [pkcs11js.CKO_PUBLIC_KEY, 'public'],
      ] as const) {
        p.C_FindObjectsInit(s, [{ type: pkcs11js.CKA_CLASS, value: cls }])
        const handles: Buffer[] = []
        for (let h = p.C_FindObjects(s); h; h = p.C_FindObjects(s)) handles.push(h)
        p.C_FindObjectsFinal(s)
        for (const h of handles) {
          const label = p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_LABEL }])[0]?.value?.toString('utf8') ?? ''
          if (!label.startsWith('warrant-')) continue
          const [priv] = p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_PRIVATE }])
          let sensitive: boolean | undefined
          let extractable: boolean | undefined
          let valueRead: string | undefined
          if (name === 'private') {
            const [sa, ea] = p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }])
            sensitive = bool(sa?.value)
            extractable = bool(ea?.value)
            try {
              p.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE }])
              valueRead = 'ok'
            } catch (err) {
              valueRead = (err as Error).message
            }
          }
          out.push({ label, cls: name, private: bool(priv?.value) === true, sensitive, extractable, valueRead })
        }
      }
      return out.sort((a, b) => `${a.label}/${a.cls}`.localeCompare(`${b.label}/${b.cls}`))
    } finally {
      p.C_CloseSession(s)
    }
  } finally {
    p.C_Finalize()
    p.close()
  }
}

const labels = (objs: TokenObject[], cls: 'private' | 'public' = 'private') => objs.filter((o) => o.cls === cls).map((o) => o.label)

function bundleOf(server: E2eServer): { x509: string[]; kids: string[] } {
  const b = SpiffeBundle.parse(td, readFileSync(server.bundleSpiffePath, 'utf8'))
  return { x509: b.x509Authorities.map((d) => Buffer.from(d).toString('base64')).sort(), kids: [...b.jwtAuthorities.keys()].sort() }
}

const pkcs11Plugins = (hsm: ProvisionedSoftHsm, pinFile = hsm.pinFile) =>
  [
    '[plugins.key_manager.pkcs11]',
    `module_path = "${hsm.modulePath}"`,
    `token_label = "${hsm.tokenLabel}"`,
    `pin_file = "${pinFile}"`,
    '[plugins.node_attestor.join_token]',
    '',
  ].join('\n')

describe.runIf(requireTools('softhsm2-util'))('server process with the CA in a SoftHSM2 token', () => {
  const tmp = tempDir('whsm-')
  let hsm: ProvisionedSoftHsm
  let server: E2eServer | undefined
  /** The server's ID (kept in its data directory): its CA and JWT key labels carry it, so several servers on one token stay apart. */
  const sid = () => readFileSync(join(server!.dataDir, 'server-id'), 'utf8').trim()
  let agent: E2eAgent | undefined
  const workloadId = `spiffe://${TD}/workload/hsm`

  beforeAll(async () => {
    hsm = await provisionSoftHsm(join(tmp.dir, 'h'))
  })

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('a wrong PIN stops `server run` with ERR_HSM_LOGIN_FAILED and no crash trace', async () => {
    const other = await provisionSoftHsm(join(tmp.dir, 'w'), { tokenLabel: 'wrongpin' })
    const wrongPin = join(tmp.dir, 'w', 'wrong-pin')
    writeFileSync(wrongPin, '0000111122223333\n', { mode: 0o600 })
    const dir = join(tmp.dir, 'sw')
    const cfg = join(tmp.dir, 'sw.toml')
    writeFileSync(cfg, e2eServerToml({ dir, trustDomain: TD, plugins: pkcs11Plugins(other, wrongPin) }))
    const r = await warrant(['server', 'run', '--config', cfg], { env: { SOFTHSM2_CONF: other.confPath }, timeoutMs: 30_000 })
    const all = r.stdout + r.stderr
    expect(r.code, all).toBe(1)
    expect(r.stderr).toMatch(/PKCS#11 login failed: incorrect PIN \[ERR_HSM_LOGIN_FAILED\]/)
    expect(all).not.toMatch(/^\s+at\s/m)
    expect(all).not.toMatch(/Uncaught|unhandled|Segmentation|core dumped/i)
    expect(all).not.toContain('0000111122223333')
    expect(all).not.toContain('Server started')
  }, 60_000)

  it('starts on the token, issues SVIDs, and keeps its keys in the token as sensitive, non-extractable objects', async () => {
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverExtra: ['ca_ttl = "1m"', 'rotation_check_interval = "1s"', 'default_x509_svid_ttl = "10s"', 'default_jwt_svid_ttl = "10s"', 'agent_ttl = "1m"'],
      plugins: pkcs11Plugins(hsm),
      env: { SOFTHSM2_CONF: hsm.confPath },
    })
    expect(server.output()).toContain('PKCS#11 key manager ready')

    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    const created = await server.cli(['entry', 'create', '--spiffe-id', workloadId, '--parent-id', agentId, '--selector', `unix:uid:${process.getuid!()}`])
    expect(created.code, created.stderr).toBe(0)
    await fetchX509Until(agent, workloadId)
    const out = join(tmp.dir, 'svid')
    const w = await agent.api(['fetch', 'x509', '--write', out])
    expect(w.code, w.stderr).toBe(0)
    const chain = readFileSync(join(out, 'svid.0.pem'), 'utf8')
      .match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)!
      .map((pem) => new Uint8Array(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64')))
    const verified = await verifyX509Svid(chain, SpiffeBundle.parse(td, readFileSync(server.bundleSpiffePath, 'utf8')))
    expect(verified.id.toString()).toBe(workloadId)

    const objs = inspectToken(hsm)
    // the CA and JWT keys, and the server audit log's checkpoint key ([audit] is on by default)
    expect(labels(objs)).toEqual([`warrant-${sid()}.jwt-2`, 'warrant-server-audit-checkpoint', `warrant-${sid()}.x509-ca-1`].sort())
    expect(labels(objs, 'public')).toEqual([`warrant-${sid()}.jwt-2`, 'warrant-server-audit-checkpoint', `warrant-${sid()}.x509-ca-1`].sort())
    for (const o of objs.filter((x) => x.cls === 'private')) {
      expect(o).toMatchObject({ private: true, sensitive: true, extractable: false, valueRead: 'CKR_ATTRIBUTE_SENSITIVE' })
    }
  }, 90_000)

  it('after SIGTERM and a restart on the same data dir and token, the X.509 authority and JWT kid are unchanged', async () => {
    const before = bundleOf(server!)
    const objsBefore = labels(inspectToken(hsm))
    const st = await server!.restart()
    expect(st.code).toBe(0)
    const after = bundleOf(server!)
    expect(after).toEqual(before)
    expect(before.x509).toHaveLength(1)
    expect(before.kids).toHaveLength(1)
    expect(labels(inspectToken(hsm))).toEqual(objsBefore)
    expect(server!.output()).not.toContain('X509 CA prepared')
    // The agent keeps getting SVIDs from the restarted server.
    const j = await fetchX509Until(agent!, workloadId, { accept: () => true })
    expect(j.svids[0]!.spiffe_id).toBe(workloadId)
  }, 60_000)

  it('rotation creates new token keys, and the retired keys leave the token once they expire out of the bundle', async () => {
    const first = bundleOf(server!)
    // ca_ttl 1m: the next keys are prepared at 30 s and published next to the old ones.
    const both = await waitFor(
      'the next CA key in the bundle',
      () => {
        const b = bundleOf(server!)
        return b.x509.length === 2 && b.kids.length === 2 ? b : undefined
      },
      { timeoutMs: 60_000, intervalMs: 500, hint: () => server!.output() },
    )
    expect(both.x509).toEqual(expect.arrayContaining(first.x509))
    expect(labels(inspectToken(hsm))).toEqual(
      [
        `warrant-${sid()}.jwt-2`,
        `warrant-${sid()}.jwt-4`,
        'warrant-server-audit-checkpoint',
        `warrant-${sid()}.x509-ca-1`,
        `warrant-${sid()}.x509-ca-3`,
      ].sort(),
    )

    // At 60 s the first keys expire: they leave the bundle and are destroyed in the token
    // (by then the next generation may already be prepared next to keys 3 and 4).
    await waitFor(
      'the retired keys to leave the bundle',
      () => {
        const b = bundleOf(server!)
        return !b.x509.includes(first.x509[0]!) && !b.kids.includes(first.kids[0]!)
      },
      { timeoutMs: 60_000, intervalMs: 500, hint: () => server!.output() },
    )
    const objs = await waitFor(
      'the retired key objects to be destroyed',
      () => {
        const o = inspectToken(hsm)
        return o.some((x) => x.label === `warrant-${sid()}.x509-ca-1` || x.label === `warrant-${sid()}.jwt-2`) ? undefined : o
      },
      { timeoutMs: 10_000 },
    )
    for (const cls of ['private', 'public'] as const) {
      expect(labels(objs, cls)).not.toContain(`warrant-${sid()}.x509-ca-1`)
      expect(labels(objs, cls)).not.toContain(`warrant-${sid()}.jwt-2`)
      expect(labels(objs, cls)).toEqual(expect.arrayContaining([`warrant-${sid()}.x509-ca-3`, `warrant-${sid()}.jwt-4`]))
    }
    const now = bundleOf(server!)
    expect(now.x509).toEqual(expect.arrayContaining(both.x509.filter((c) => c !== first.x509[0])))
    expect(server!.output()).toContain('Retired key destroyed')
  }, 150_000)
})
