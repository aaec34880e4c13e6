/**
 * `warrant token exchange|renew|delegate|introspect|revoke` as real
 * processes against the broker embedded in a real `warrant server run`, with
 * the agent identities from a real agent's Workload API (two entries for this
 * uid, picked with --spiffe-id): a DPoP-bound token kept with its key in a
 * 0600 key file across invocations, renewal (narrower; wider refused),
 * delegation to a sub-agent that redeems the grant with its own key,
 * introspection, revocation of the chain, and a certificate-bound token
 * renewed with --token, and a JWT-SVID exchange. `token generate` runs too
 * (the agent's join token).
 */
import net from 'node:net'
import { readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, fetchX509Until, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'cli.test'
const A = `spiffe://${TD}/agents/a`
const B = `spiffe://${TD}/agents/b`
const API = 'https://api.cli.test/'

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('warrant token exchange|renew|delegate|introspect|revoke against a real broker', () => {
  const tmp = tempDir('wtc-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let env: NodeJS.ProcessEnv
  const keyA = join(tmp.dir, 'a.json')
  const keyB = join(tmp.dir, 'b.json')

  const tok = async (args: string[], expectCode = 0) => {
    const r = await warrant(['token', ...args, '--output', 'json'], { env })
    expect(r.code, `warrant token ${args.join(' ')}: ${r.stderr}`).toBe(expectCode)
    return { ...r, json: () => JSON.parse(r.stdout) as Record<string, unknown> }
  }

  beforeAll(async () => {
    const port = await freePort()
    const issuer = `https://localhost:${port}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["read", "write"]',
        `resources = ["${API}"]`,
        'max_token_ttl = "10m"',
        'max_renewals = 3',
        'max_delegation_depth = 2',
        `may_delegate_to = ["spiffe://${TD}/agents/"]`,
        '',
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${port}"`,
        `introspectors = ["spiffe://${TD}/agents/"]`,
        '[broker.dpop]',
        'nonce_required = true',
      ].join('\n'),
    })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    for (const id of [A, B]) {
      const created = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentId, '--selector', `unix:uid:${process.getuid!()}`])
      expect(created.code, created.stderr).toBe(0)
    }
    await fetchX509Until(agent, A, { accept: (j) => j.svids.some((s) => s.spiffe_id === B) })
    const socket = join(server.dataDir, 'private', 'broker-admin.sock')
    const task = await warrant([
      'task',
      'create',
      '--socket',
      socket,
      '--agent',
      `spiffe://${TD}/agents/`,
      '--scope',
      'read',
      '--scope',
      'write',
      '--resource',
      API,
      '--ttl',
      '1h',
      '--max-renewals',
      '3',
      '--task-id',
      'cli-task',
      '--output',
      'json',
    ])
    expect(task.code, task.stderr).toBe(0)
    env = { WARRANT_BROKER_URL: issuer, WARRANT_BROKER_CA: server.bundlePemPath, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}` }
  }, 180_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGTERM')
    tmp.cleanup()
  })

  let first: Record<string, unknown>

  it('exchange --key-file: a DPoP-bound token; the token and its key go to a 0600 file', async () => {
    const r = await tok(['exchange', '--spiffe-id', A, '--task', 'cli-task', '--scope', 'read write', '--resource', API, '--key-file', keyA])
    first = r.json()
    expect(first).toMatchObject({ token_type: 'DPoP', scope: 'read write', sub: A, task_id: 'cli-task', key_file: keyA, expires_in: 300 })
    expect(statSync(keyA).mode & 0o777).toBe(0o600)
    const file = JSON.parse(readFileSync(keyA, 'utf8')) as { access_token: string; dpop_jwk: { d?: string } }
    expect(file.access_token).toBe(first.access_token)
    expect(file.dpop_jwk.d).toEqual(expect.any(String))
    expect((decodeJwt(first.access_token as string).cnf as { jkt?: string }).jkt).toEqual(expect.any(String))
  }, 60_000)

  it('renew --key-file: same key, narrower; a wider renewal is refused with its code and no token in the message', async () => {
    const r = (await tok(['renew', '--key-file', keyA, '--spiffe-id', A, '--scope', 'read'])).json()
    expect(r).toMatchObject({ token_type: 'DPoP', scope: 'read', sub: A })
    expect(r.jti).not.toBe(first.jti)
    expect(decodeJwt(r.access_token as string).cnf).toEqual(decodeJwt(first.access_token as string).cnf)
    expect(JSON.parse(readFileSync(keyA, 'utf8')).access_token).toBe(r.access_token)
    const wider = await warrant(['token', 'renew', '--key-file', keyA, '--spiffe-id', A, '--scope', 'read write'], { env })
    expect(wider.code).toBe(1)
    expect(wider.stderr).toContain('ERR_SCOPE_INVALID')
    expect(wider.stderr + wider.stdout).not.toContain(r.access_token as string)
  }, 60_000)

  it('delegate --to: a one-time grant the sub-agent redeems with exchange --grant and its own key file', async () => {
    // a fresh read+write token to delegate from
    await tok(['exchange', '--spiffe-id', A, '--task', 'cli-task', '--key-file', keyA])
    const g = (await tok(['delegate', '--key-file', keyA, '--spiffe-id', A, '--to', B, '--scope', 'read'])).json()
    expect(g).toMatchObject({ token_type: 'N_A', may_act: B, scope: 'read', issued_token_type: 'urn:ietf:params:oauth:token-type:jwt' })
    const grantFile = join(tmp.dir, 'grant.txt')
    writeFileSync(grantFile, `${g.grant as string}\n`)
    const d = (await tok(['exchange', '--spiffe-id', B, '--grant', `@${grantFile}`, '--key-file', keyB])).json()
    expect(d).toMatchObject({ token_type: 'DPoP', sub: A, scope: 'read', act: { sub: B } })
    const again = await warrant(['token', 'exchange', '--spiffe-id', B, '--grant', g.grant as string, '--key-file', join(tmp.dir, 'b2.json')], { env })
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('ERR_TOKEN_REQUEST_INVALID')
    const wider = await warrant(['token', 'delegate', '--key-file', keyB, '--spiffe-id', B, '--to', A, '--scope', 'write'], { env })
    expect(wider.code).toBe(1)
  }, 60_000)

  it('introspect, then revoke the delegating token: the delegated one is inactive too', async () => {
    expect((await tok(['introspect', '--key-file', keyB, '--spiffe-id', A])).json()).toMatchObject({ active: true, sub: A, act: { sub: B } })
    expect((await tok(['revoke', '--key-file', keyA, '--spiffe-id', A])).json()).toEqual({ revoked: true })
    expect((await tok(['introspect', '--key-file', keyA, '--spiffe-id', A])).json()).toEqual({ active: false })
    expect((await tok(['introspect', '--key-file', keyB, '--spiffe-id', A])).json()).toEqual({ active: false })
  }, 60_000)

  it('without --key-file: a certificate-bound token, renewed with --token by the same SVID', async () => {
    const t = (await tok(['exchange', '--spiffe-id', A, '--task', 'cli-task', '--scope', 'read'])).json()
    expect(t.token_type).toBe('Bearer')
    expect(decodeJwt(t.access_token as string).cnf).toHaveProperty('x5t#S256')
    const r = (await tok(['renew', '--token', t.access_token as string, '--spiffe-id', A])).json()
    expect(r).toMatchObject({ scope: 'read', sub: A })
    const other = await warrant(['token', 'renew', '--token', r.access_token as string, '--spiffe-id', B], { env })
    expect(other.code).toBe(1)
    expect(other.stderr).toContain('ERR_TOKEN_REQUEST_INVALID')
  }, 60_000)

  it("exchange --jwt-svid: the caller's JWT-SVID from the Workload API as the RFC 8693 subject token", async () => {
    const t = (await tok(['exchange', '--spiffe-id', B, '--jwt-svid', '--task', 'cli-task', '--scope', 'read', '--key-file', join(tmp.dir, 'j.json')])).json()
    expect(t).toMatchObject({ token_type: 'DPoP', sub: B, scope: 'read', task_id: 'cli-task' })
    expect(decodeJwt(t.access_token as string).act).toBeUndefined()
  }, 60_000)

  it('refuses a key file others can read, and usage errors', async () => {
    chmodSync(keyB, 0o644)
    const r = await warrant(['token', 'renew', '--key-file', keyB], { env })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('0600')
    expect((await warrant(['token', 'exchange', '--binding', 'dpop'], { env })).stderr).toContain('--key-file')
    expect((await warrant(['token', 'nope'], { env })).code).toBe(2)
    const noSvid = await warrant(['token', 'exchange', '--spiffe-id', `spiffe://${TD}/agents/nobody`, '--task', 'cli-task'], { env })
    expect(noSvid.code).toBe(1)
    expect(noSvid.stderr).toContain('ERR_NO_IDENTITY_ISSUED')
  }, 60_000)
})
