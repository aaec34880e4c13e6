/**
 * Intents on the broker's real HTTPS wire and admin socket: metadata, the CIBA
 * endpoint and grant (pending, slow_down, approved over the admin socket, the
 * token), the inline declaration at the token endpoint, outcome reports by an
 * introspector, and the notifications (a local webhook receiver and a local
 * SMTP sink).
 */
import { createHash } from 'node:crypto'
import http from 'node:http'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { SMTPServer } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerAdminServer, type BrokerAdminServer } from '../../../../src/broker/admin/admin-server.js'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../../../src/broker/http/broker-http-server.js'
import { parseIntentsConfig } from '../../../../src/broker/intents/config.js'
import { IntentService } from '../../../../src/broker/intents/intent-service.js'
import { ApprovalNotifier } from '../../../../src/broker/intents/notify.js'
import { boundsCeilingSource } from '../../../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../../../src/broker/service.js'
import { brokerAdminCall } from '../../../../src/cli/broker-admin-client.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createDpopProof } from '../../../../src/tokens/dpop.js'
import { webcrypto } from 'node:crypto'
import { bundlesOf, form, httpConfig, makeCa, makeSvid, pem, request, type Res, type Svid } from '../../../helpers/broker-http-fixtures.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { tempDir } from '../../../helpers/temp.js'
import { freePort } from '../../../helpers/e2e-procs.js'

const TD = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/agents/a'
const RS = 'spiffe://example.org/rs'
const API = 'https://api.example.org/'
const digest = (s: string) => createHash('sha256').update(s).digest('base64url')
const intent = (action: string, resource: string) =>
  JSON.stringify([{ type: 'warrant_intent', actions: [action], locations: [resource], params_digest: digest(resource), declared_risk: 0.2 }])

describe('intents on the wire', () => {
  const tmp = tempDir('wbi-')
  let svc: BrokerServiceImpl
  let intents: IntentService
  let notifier: ApprovalNotifier
  let broker: BrokerHttpServer
  let admin: BrokerAdminServer
  let caPem: string
  let svids: Record<string, Svid>
  let issuer: string
  let hooks: { body: Record<string, unknown> }[]
  let mails: string[]
  let hookServer: http.Server
  let smtp: SMTPServer
  const socket = join(tmp.dir, 'admin.sock')
  let nonce: string | undefined
  let key: webcrypto.CryptoKeyPair

  beforeAll(async () => {
    const ca = await makeCa('example.org')
    const bundles = bundlesOf([ca])
    caPem = pem(ca.certificate)
    svids = { [AGENT]: await makeSvid(ca, AGENT), [RS]: await makeSvid(ca, RS) }
    const serverSvid = await makeSvid(ca, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
    hooks = []
    mails = []
    hookServer = http.createServer((req, res) => {
      let b = ''
      req.on('data', (c: Buffer) => (b += c.toString()))
      req.on('end', () => {
        hooks.push({ body: JSON.parse(b) as Record<string, unknown> })
        res.writeHead(200).end('ok')
      })
    })
    await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', () => r()))
    smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      onData(stream, _session, cb) {
        let m = ''
        stream.on('data', (c: Buffer) => (m += c.toString()))
        stream.on('end', () => {
          // quoted-printable soft line breaks undone
          mails.push(m.replace(/=\r?\n/g, ''))
          cb()
        })
      },
    })
    await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()))
    const smtpPort = (smtp.server.address() as { port: number }).port
    const hookPort = (hookServer.address() as { port: number }).port
    const port = await freePort()
    issuer = `https://localhost:${port}`
    const bounds = BoundsSet.parse(TD, { '/agents': { scopes: ['read', 'write'], resources: [API] } })
    const log = captureLogger()
    svc = await createBrokerService(
      { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => bounds), jwtBundles: bundles, log },
      { issuer, storePath: join(tmp.dir, 'broker.db'), introspectors: [RS] },
    )
    const cfg = parseIntentsConfig(
      {
        poll_interval: '1s',
        history: { mismatch_weight: 0.1 },
        console_url: 'https://console.example/approvals/{id}',
        actions: [{ match: 'write', weight: 0.6 }],
        approver_groups: { operators: { webhook_url: `http://127.0.0.1:${hookPort}/hook`, email: ['ops@example.org'] } },
        smtp: { host: '127.0.0.1', port: smtpPort, from: 'warrant@example.org' },
      },
      { baseDir: tmp.dir },
    )!
    notifier = new ApprovalNotifier({ groups: cfg.approverGroups, smtp: cfg.smtp!, consoleUrl: cfg.consoleUrl!, log })
    intents = new IntentService({ config: cfg, broker: svc, ceilings: boundsCeilingSource(() => bounds), requireTask: true, notifier, log })
    broker = await startBrokerHttpServer({
      service: svc,
      config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port }, introspectors: { ids: [RS], prefixes: [] } }),
      trust: { localTrustDomain: () => TD, bundles: () => bundles, version: () => bundles },
      identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
      log,
      intents,
    })
    admin = await startBrokerAdminServer({ service: svc, socketPath: socket, log, approvals: intents })
    await svc.createTask({ taskId: 't1', agent: AGENT, scopes: ['read', 'write'], resources: [API], ttlSeconds: 3600, maxRenewals: 0 }, 'admin')
    key = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
  })

  afterAll(async () => {
    await admin?.close()
    await broker?.close()
    intents?.close()
    notifier?.close()
    await svc?.close()
    await new Promise<void>((r) => hookServer.close(() => r()))
    await new Promise<void>((r) => smtp.close(() => r()))
    tmp.cleanup()
  })

  const post = async (path: string, as: string, params: Record<string, string>, dpop = false): Promise<Res> => {
    const url = `${issuer}${path}`
    const send = async () => {
      const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
      if (dpop) headers.dpop = await createDpopProof(key, { method: 'POST', url, ...(nonce !== undefined ? { nonce } : {}) })
      const res = await request(url, { method: 'POST', headers, body: form(params), client: svids[as]!, ca: caPem })
      if (typeof res.headers['dpop-nonce'] === 'string') nonce = res.headers['dpop-nonce']
      return res
    }
    const res = await send()
    return dpop && res.status === 400 && res.json().error === 'use_dpop_nonce' ? send() : res
  }

  it('advertises CIBA, the grant and the intent detail type', async () => {
    const m = (await request(`${issuer}/.well-known/oauth-authorization-server`, { ca: caPem })).json()
    expect(m).toMatchObject({
      backchannel_authentication_endpoint: `${issuer}/bc-authorize`,
      backchannel_token_delivery_modes_supported: ['poll'],
      authorization_details_types_supported: ['warrant_intent'],
      warrant_intent_outcome_endpoint: `${issuer}/intents/outcome`,
    })
    expect(m.grant_types_supported).toContain('urn:openid:params:grant-type:ciba')
  })

  it('CIBA: pending, slow_down, notified, approved over the admin socket, then the DPoP-bound action token', async () => {
    const r = await post('/bc-authorize', AGENT, { authorization_details: intent('write', `${API}deploy`), task_id: 't1', binding_message: 'deploy v2' })
    expect(r.status).toBe(200)
    const { auth_req_id, expires_in, interval, intent_id } = r.json() as Record<string, string | number>
    expect({ expires_in, interval }).toEqual({ expires_in: 600, interval: 1 })
    const grant = { grant_type: 'urn:openid:params:grant-type:ciba', auth_req_id: auth_req_id as string }
    const p1 = await post('/token', AGENT, grant, true)
    expect([p1.status, p1.json().error]).toEqual([400, 'authorization_pending'])
    const p2 = await post('/token', AGENT, grant, true)
    expect([p2.status, p2.json().error]).toEqual([400, 'slow_down'])
    await notifier.idle()
    expect(hooks).toHaveLength(1)
    const hook = hooks[0]!.body as { text: string; blocks: { type: string; elements?: { url?: string }[] }[] }
    expect(hook.text).toContain(`${AGENT} wants write on ${API}deploy`)
    expect(hook.blocks.find((b) => b.type === 'actions')!.elements![0]!.url).toBe(`https://console.example/approvals/${intent_id as string}`)
    expect(mails).toHaveLength(1)
    expect(mails[0]).toContain('Subject: [warrant] Approval needed: write on https://api.example.org/deploy')
    expect(mails[0]).toContain(`https://console.example/approvals/${intent_id as string}`)
    expect(mails[0]).not.toContain('undefined')

    const listed = await brokerAdminCall<{ approvals: { id: string; status: string }[] }>(socket, 'GET', '/v1/approvals?status=pending')
    expect(listed.approvals.map((a) => a.id)).toEqual([intent_id])
    const approved = await brokerAdminCall<{ status: string; approver: unknown }>(socket, 'POST', `/v1/approvals/${intent_id as string}/approve`, {
      uid: 1000,
      reason: 'ok',
    })
    expect(approved).toMatchObject({ status: 'approved', approver: { id: 'cli:1000', method: 'unix-socket' } })
    await expect(brokerAdminCall(socket, 'POST', `/v1/approvals/${intent_id as string}/deny`, { uid: 1000 })).rejects.toMatchObject({
      code: 'ERR_INTENT_NOT_PENDING',
    })
    await new Promise((res) => setTimeout(res, 1000))
    const t = await post('/token', AGENT, grant, true)
    expect(t.status).toBe(200)
    const body = t.json()
    expect(body).toMatchObject({ token_type: 'DPoP', scope: 'write', intent_id })
    expect(decodeJwt(body.access_token as string)).toMatchObject({ aud: API, authorization_details: [{ actions: ['write'], locations: [`${API}deploy`] }] })
    const again = await post('/token', AGENT, grant, true)
    expect(again.json().error).toBe('invalid_grant')

    // the resource server reports: done as declared, then a reuse is refused
    const jti = decodeJwt(body.access_token as string).jti!
    const ok = await post('/intents/outcome', RS, { jti, action: 'write', resource: `${API}deploy`, phase: 'before' })
    expect([ok.status, ok.json().outcome]).toEqual([200, 'match'])
    const reuse = await post('/intents/outcome', RS, { jti, action: 'write', resource: `${API}deploy`, phase: 'before' })
    expect(reuse.status).toBe(403)
    expect(reuse.json()).toMatchObject({ error: 'access_denied', outcome: 'mismatch', reasons: ['reuse'] })
    // only reporters may report
    expect((await post('/intents/outcome', AGENT, { jti, action: 'write', resource: `${API}deploy` })).json().error).toBe('unauthorized_client')
  })

  it('inline at the token endpoint: the token in one answer; waiting for a human, the CIBA handle', async () => {
    const ok = await post('/token', AGENT, { grant_type: 'client_credentials', task_id: 't1', authorization_details: intent('read', `${API}x`) }, true)
    expect([ok.status, ok.body]).toEqual([200, expect.stringContaining('access_token')])
    expect(ok.json()).toMatchObject({ token_type: 'DPoP', scope: 'read', authorization_details: [{ type: 'warrant_intent', actions: ['read'] }] })
    const wait = await post('/token', AGENT, { grant_type: 'client_credentials', task_id: 't1', authorization_details: intent('write', `${API}y`) }, true)
    expect(wait.status).toBe(400)
    expect(wait.json()).toMatchObject({ error: 'authorization_pending', interval: 1 })
    expect(wait.json().auth_req_id).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const bad = await post('/bc-authorize', AGENT, { authorization_details: '[{"type":"warrant_intent"}]', task_id: 't1' })
    expect([bad.status, bad.json().error]).toEqual([400, 'invalid_authorization_details'])
    const beyond = await post('/bc-authorize', AGENT, { authorization_details: intent('read', 'https://elsewhere.example/'), task_id: 't1' })
    expect([beyond.status, beyond.json().error]).toEqual([403, 'access_denied'])
    const hint = await post('/bc-authorize', AGENT, { authorization_details: intent('write', `${API}z`), task_id: 't1', login_hint: 'friends' })
    expect([hint.status, hint.json().error]).toEqual([400, 'unknown_user_id'])
  })
})
