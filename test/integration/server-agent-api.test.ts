/**
 * The agent-facing API (`warrant.agent.v1.Node`) of a real `warrant server run`
 * process, over TCP with real TLS: join-token and x509pop attestation, then
 * mutual-TLS calls (Sync, BatchNewX509SVID, NewJWTSVID) with the issued SVID;
 * eviction and banning through the CLI.
 */
import { status as Status, type ServiceError } from '@grpc/grpc-js'
import { execFileSync } from 'node:child_process'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../src/spiffe/bundle/x509-bundle.js'
import { validateJwtSvid } from '../../src/spiffe/jwt-svid/validate-jwt-svid.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { verifyX509Svid } from '../../src/spiffe/x509-svid/verify.js'
import { ServerProcess } from '../helpers/server-process.js'
import { tempDir } from '../helpers/temp.js'
import { newP256, TestAgentClient } from '../helpers/test-agent-client.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'example.org'
const td = TrustDomain.fromString(TD)
const SERVER_ID = `spiffe://${TD}/warrant/server`

interface EntryResult {
  status: { code: number; error_code: string; message: string }
  entry: { id: string; spiffe_id: string; parent_id: string } | null
}

function expectStatus(err: unknown, code: number): ServiceError {
  const e = err as ServiceError
  expect(e, String(err)).toBeInstanceOf(Error)
  expect(e.code, `${e.code} ${e.details}`).toBe(code)
  return e
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected the call to fail')
}

/** A test CA and an agent certificate it issued, made with openssl. */
function makeX509PopPki(dir: string): { caPath: string; chain: X509Certificate[]; keyPem: string } {
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  writeFileSync(join(dir, 'leaf.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n')
  o([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-subj',
    '/CN=warrant test node CA',
    '-days',
    '2',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  o(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=node-1'])
  o(['x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.pem', '-days', '1', '-extfile', 'leaf.ext'])
  return { caPath: join(dir, 'ca.pem'), chain: [new X509Certificate(readFileSync(join(dir, 'node.pem')))], keyPem: readFileSync(join(dir, 'node.key'), 'utf8') }
}

describe.runIf(requireTools('openssl'))('warrant server agent API (process, mutual TLS)', () => {
  let srv: ServerProcess
  let pki: ReturnType<typeof makeX509PopPki>
  let pkiDir: { dir: string; cleanup: () => void }
  let admin: ReturnType<typeof adminClient>
  let agents: ReturnType<typeof adminClient>
  const clients: TestAgentClient[] = []

  beforeAll(async () => {
    pkiDir = tempDir('wpki-')
    pki = makeX509PopPki(pkiDir.dir)
    srv = await ServerProcess.start({ extra: `[plugins.node_attestor.x509pop]\nca_bundle_path = "${pki.caPath}"` })
    admin = adminClient('Entries', srv.socketPath)
    agents = adminClient('Agents', srv.socketPath)
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    admin?.close()
    agents?.close()
    await srv?.dispose()
    pkiDir?.cleanup()
  })

  const client = () => {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    clients.push(c)
    return c
  }
  const token = async (ttl?: number) => (await agents.call<{ token: string }>('CreateJoinToken', { ttl: ttl ?? 0, spiffe_id: '' })).token
  const createEntry = async (spiffeId: string, parentId: string, selector = 'unix:uid:1000') => {
    const [type, ...v] = selector.split(':')
    const r = await admin.call<{ results: EntryResult[] }>('BatchCreate', {
      entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type, value: v.join(':') }] }],
    })
    expect(r.results[0]!.status.message).toBe('')
    return r.results[0]!.entry!
  }
  const bundle = () => X509Bundle.parsePem(td, srv.bundlePem())

  it('attests with a join token and issues an agent SVID that verifies against the bundle', async () => {
    const c = client()
    const t = await token()
    const cred = await c.attestJoinToken(t)
    expect(cred.agentId).toMatch(new RegExp(`^spiffe://${TD.replace('.', '\\.')}/warrant/agent/join_token/[0-9a-f]{32}$`))
    const v = await verifyX509Svid(cred.chain, bundle())
    expect(v.id.toString()).toBe(cred.agentId)
    expect(cred.bundle?.trust_domain).toBe(TD)
    // the key in the certificate is ours
    expect(new X509Certificate(cred.chain[0]!).checkPrivateKey(cred.key)).toBe(true)
  })

  it('rejects a reused and an expired join token with PERMISSION_DENIED without saying why', async () => {
    const used = await token()
    await client().attestJoinToken(used)
    const reused = expectStatus(await rejection(client().attestJoinToken(used)), Status.PERMISSION_DENIED)

    const short = await token(1)
    // Expiry is wall-clock in the server process: wait it out.
    await new Promise((r) => setTimeout(r, 2100))
    const expired = expectStatus(await rejection(client().attestJoinToken(short)), Status.PERMISSION_DENIED)

    const unknown = expectStatus(await rejection(client().attestJoinToken('never-issued-token-value')), Status.PERMISSION_DENIED)
    for (const e of [reused, expired, unknown]) {
      expect(e.details).toBe(reused.details)
      expect(e.details).not.toMatch(/expire|used|exist|token/i)
    }
    expect(srv.output()).not.toContain(used)
  })

  it('Sync sends the full set first, then a new entry as an increment on the open stream', async () => {
    const c = client()
    const cred = await c.attestJoinToken(await token())
    const mine = await createEntry(`spiffe://${TD}/sync/mine`, cred.agentId)
    const child = await createEntry(`spiffe://${TD}/sync/child`, mine.spiffe_id)
    const other = client()
    const otherCred = await other.attestJoinToken(await token())
    const theirs = await createEntry(`spiffe://${TD}/sync/theirs`, otherCred.agentId)

    const s = c.sync()
    try {
      const first = await s.next()
      expect(first.full).toBe(true)
      const ids = first.entries.map((e) => e.id)
      expect(ids).toEqual(expect.arrayContaining([mine.id, child.id]))
      expect(ids).not.toContain(theirs.id)
      expect(first.bundle?.trust_domain).toBe(TD)
      const doc = SpiffeBundle.parse(td, first.bundle!.document)
      expect(doc.x509Bundle().authorities.length).toBe(bundle().authorities.length)

      const added = await createEntry(`spiffe://${TD}/sync/added`, cred.agentId)
      let inc = await s.next()
      // other agents' changes may produce nothing for us; skip messages without our entry
      while (!inc.entries.some((e) => e.id === added.id)) inc = await s.next()
      expect(inc.full).toBe(false)
      expect(inc.entries.map((e) => e.id)).toEqual([added.id])

      await admin.call('BatchDelete', { ids: [added.id] })
      let del = await s.next()
      while (!del.deleted_entry_ids.includes(added.id)) del = await s.next()
      expect(del.full).toBe(false)
    } finally {
      s.cancel()
    }
  })

  it('BatchNewX509SVID signs authorized entries and reports per-item PERMISSION_DENIED and INVALID_ARGUMENT', async () => {
    const c = client()
    const cred = await c.attestJoinToken(await token())
    const mine = await createEntry(`spiffe://${TD}/batch/mine`, cred.agentId)
    const otherCred = await client().attestJoinToken(await token())
    const theirs = await createEntry(`spiffe://${TD}/batch/theirs`, otherCred.agentId)

    const k = newP256()
    const csr = await createCsr({ privateKey: k.privateKey })
    const results = await c.batchNewX509Svid([
      { entryId: mine.id, csr },
      { entryId: theirs.id, csr },
      { entryId: mine.id, csr: Buffer.from('not a CSR') },
      { entryId: 'no-such-entry', csr },
    ])
    expect(results.map((r) => r.status.code)).toEqual([Status.OK, Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT, Status.PERMISSION_DENIED])
    const ok = results[0]!
    const v = await verifyX509Svid(
      ok.svid_chain.map((b) => new Uint8Array(b)),
      bundle(),
    )
    expect(v.id.toString()).toBe(`spiffe://${TD}/batch/mine`)
    expect(new X509Certificate(ok.svid_chain[0]!).publicKey.equals(k.publicKey)).toBe(true)
    expect(Number(ok.expires_at)).toBeGreaterThan(Date.now())
    // the denial does not reveal whether the entry exists
    expect(results[1]!.status.message).toBe(results[3]!.status.message)
    expect(results[1]!.svid_chain).toHaveLength(0)
  })

  it('NewJWTSVID returns a token that validates against the bundle JWT keys', async () => {
    const c = client()
    const cred = await c.attestJoinToken(await token())
    const e = await createEntry(`spiffe://${TD}/jwt/svc`, cred.agentId)
    const r = await c.newJwtSvid(e.id, ['https://api.example'])
    const s = c.sync()
    let doc: SpiffeBundle
    try {
      doc = SpiffeBundle.parse(td, (await s.next()).bundle!.document)
    } finally {
      s.cancel()
    }
    const svid = await validateJwtSvid(r.token, doc.jwtBundle(), { audience: 'https://api.example' })
    expect(svid.id.toString()).toBe(`spiffe://${TD}/jwt/svc`)
    const err = await rejection(validateJwtSvid(r.token, doc.jwtBundle(), { audience: 'https://other.example' }))
    expect((err as { code: string }).code).toBe('ERR_JWT_AUDIENCE_MISMATCH')
    const denied = await rejection(c.newJwtSvid('no-such-entry', ['a']))
    expectStatus(denied, Status.PERMISSION_DENIED)
  })

  it('refuses every authenticated RPC without a client certificate (UNAUTHENTICATED)', async () => {
    const c = client()
    await c.attestJoinToken(await token())
    const csr = await createCsr({ privateKey: newP256().privateKey })
    expectStatus(await rejection(c.batchNewX509Svid([{ entryId: 'x', csr }], { anonymous: true })), Status.UNAUTHENTICATED)
    expectStatus(await rejection(c.newJwtSvid('x', ['a'], { anonymous: true })), Status.UNAUTHENTICATED)
    expectStatus(await rejection(c.renewAgent(csr, { anonymous: true })), Status.UNAUTHENTICATED)
    const s = c.sync({ anonymous: true })
    expectStatus(await rejection(s.next()), Status.UNAUTHENTICATED)
  })

  it('after `agent evict` the next call fails and the agent can attest again with a new token', async () => {
    const c = client()
    const cred = await c.attestJoinToken(await token())
    const e = await createEntry(`spiffe://${TD}/evict/svc`, cred.agentId)
    const csr = await createCsr({ privateKey: newP256().privateKey })
    expect((await c.batchNewX509Svid([{ entryId: e.id, csr }]))[0]!.status.code).toBe(Status.OK)

    const ev = await srv.cli(['agent', 'evict', '--id', cred.agentId])
    expect(ev.code, ev.stderr).toBe(0)
    expectStatus(await rejection(c.batchNewX509Svid([{ entryId: e.id, csr }])), Status.PERMISSION_DENIED)
    expectStatus(await rejection(c.newJwtSvid(e.id, ['a'])), Status.PERMISSION_DENIED)
    const shown = await srv.cli(['agent', 'show', '--id', cred.agentId])
    expect(shown.code).not.toBe(0)

    const again = await c.attestJoinToken(await token())
    expect(again.agentId).not.toBe(cred.agentId)
    const list = await srv.cliJson<{ agents: { agent_id: string }[] }>(['agent', 'list'])
    expect(list.agents.map((a) => a.agent_id)).toContain(again.agentId)
    expect(list.agents.map((a) => a.agent_id)).not.toContain(cred.agentId)
  })

  it('x509pop: attests with a certificate of the configured CA; evicted it re-attests, banned it cannot', async () => {
    const key = createPrivateKey(pki.keyPem)
    const c = client()
    const cred = await c.attestX509Pop(pki.chain, key)
    expect(cred.agentId).toMatch(new RegExp(`^spiffe://${TD.replace('.', '\\.')}/warrant/agent/x509pop/[0-9a-f]{40}$`))
    expect((await verifyX509Svid(cred.chain, bundle())).id.toString()).toBe(cred.agentId)
    const shown = await srv.cliJson<{ agent_id: string; attestor: string; selectors: { type: string; value: string }[]; can_reattest: boolean }>([
      'agent',
      'show',
      '--id',
      cred.agentId,
    ])
    expect(shown).toMatchObject({ agent_id: cred.agentId, attestor: 'x509pop', can_reattest: true })
    expect(shown.selectors).toContainEqual({ type: 'x509pop', value: 'subject:cn:node-1' })

    // an entry parented to a node selector (through a server-parented alias) reaches the agent
    const alias = await createEntry(`spiffe://${TD}/nodes/node-1`, SERVER_ID, 'x509pop:subject:cn:node-1')
    const wl = await createEntry(`spiffe://${TD}/x509pop/workload`, alias.spiffe_id)
    const csr = await createCsr({ privateKey: newP256().privateKey })
    expect((await c.batchNewX509Svid([{ entryId: wl.id, csr }]))[0]!.status.code).toBe(Status.OK)

    expect((await srv.cli(['agent', 'evict', '--id', cred.agentId])).code).toBe(0)
    expectStatus(await rejection(c.batchNewX509Svid([{ entryId: wl.id, csr }])), Status.PERMISSION_DENIED)
    const re = await c.attestX509Pop(pki.chain, key)
    expect(re.agentId).toBe(cred.agentId)
    expect((await c.batchNewX509Svid([{ entryId: wl.id, csr }]))[0]!.status.code).toBe(Status.OK)

    const ban = await srv.cli(['agent', 'ban', '--id', cred.agentId])
    expect(ban.code, ban.stderr).toBe(0)
    expectStatus(await rejection(c.batchNewX509Svid([{ entryId: wl.id, csr }])), Status.PERMISSION_DENIED)
    const refused = expectStatus(await rejection(client().attestX509Pop(pki.chain, key)), Status.PERMISSION_DENIED)
    expect(refused.details).not.toMatch(/ban/i)
    const banned = await srv.cliJson<{ agents: { agent_id: string; banned: boolean }[] }>(['agent', 'list', '--banned', 'true'])
    expect(banned.agents).toContainEqual(expect.objectContaining({ agent_id: cred.agentId, banned: true }))
  })

  it('x509pop: refuses a certificate from another CA and a wrong proof of possession', async () => {
    const otherDir = tempDir('wpki2-')
    try {
      const other = makeX509PopPki(otherDir.dir)
      expectStatus(await rejection(client().attestX509Pop(other.chain, createPrivateKey(other.keyPem))), Status.PERMISSION_DENIED)
      // right certificate, wrong key
      expectStatus(await rejection(client().attestX509Pop(pki.chain, createPrivateKey(other.keyPem))), Status.PERMISSION_DENIED)
    } finally {
      otherDir.cleanup()
    }
  })
})
