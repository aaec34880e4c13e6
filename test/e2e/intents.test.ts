/**
 * Intents and human approval end to end (issue 23): a real `warrant server
 * run` with its embedded broker and `[broker.intents]`, a real agent (join
 * token) serving the agent's and a resource server's X.509-SVIDs, approvers
 * reached through a local webhook receiver and a local SMTP sink, and the
 * agent side driven by oauth4webapi (an OAuth client library we did not
 * write, with its CIBA support): a low-risk intent approved by rule and its
 * token used once; a high-risk one pending over CIBA until `warrant approval
 * approve`, then the token; a denied one; a forbidden one refused; an
 * outcome mismatch refused, recorded in the broker's audit log and raised as
 * a Shared Signal about the agent.
 */
import { createHash, X509Certificate } from 'node:crypto'
import http from 'node:http'
import https from 'node:https'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { decodeJwt, generateKeyPair } from 'jose'
import { SMTPServer } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, waitFor, warrant, warrantJson } from '../helpers/e2e-cluster.js'
import { freePort } from '../helpers/e2e-procs.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'intents.test'
const AGENT_ID = `spiffe://${TD}/agents/a1`
const RS_ID = `spiffe://${TD}/rs/git`
const GIT = 'https://git.intents.test/'
const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'

interface Tls {
  ca: string
  cert?: string
  key?: string
}

/** One HTTPS request with optional client certificate; the answer as a fetch Response (oauth4webapi's customFetch). */
function httpsFetch(tls: Tls) {
  return (url: string, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: unknown }): Promise<Response> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {}
      new Headers(init.headers).forEach((v, k) => (headers[k] = v))
      const body = init.body === undefined || init.body === null ? undefined : String(init.body)
      const req = https.request(
        url,
        { method: init.method ?? 'GET', headers, ca: tls.ca, ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}), agent: false },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            const h = new Headers()
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
            const status = res.statusCode ?? 0
            resolve(new Response(status === 204 ? null : Buffer.concat(chunks), { status, headers: h }))
          })
        },
      )
      req.on('error', reject)
      if (body !== undefined) req.write(body)
      req.end()
    })
}

const digest = (s: string) => createHash('sha256').update(s).digest('base64url')
const intent = (action: string, path: string, declaredRisk?: number) =>
  JSON.stringify([
    {
      type: 'warrant_intent',
      actions: [action],
      locations: [`${GIT}${path}`],
      params_digest: digest(`${action} ${path}`),
      task: 'intent-task',
      ...(declaredRisk !== undefined ? { declared_risk: declaredRisk } : {}),
    },
  ])

describe('intents and human approval: server, agent, CLI and oauth4webapi as processes', () => {
  const tmp = tempDir('wint-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let issuer = ''
  let agentTls: Tls
  let rsTls: Tls
  let socket = ''
  const hooks: Record<string, unknown>[] = []
  const mails: string[] = []
  let hookServer: http.Server
  let smtp: SMTPServer

  beforeAll(async () => {
    hookServer = http.createServer((req, res) => {
      let b = ''
      req.on('data', (c: Buffer) => (b += c.toString()))
      req.on('end', () => {
        hooks.push(JSON.parse(b) as Record<string, unknown>)
        res.writeHead(200).end('ok')
      })
    })
    await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', () => r()))
    smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      onData(stream, _s, cb) {
        let m = ''
        stream.on('data', (c: Buffer) => (m += c.toString()))
        stream.on('end', () => {
          mails.push(m.replace(/=\r?\n/g, ''))
          cb()
        })
      },
    })
    await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()))
    const hookPort = (hookServer.address() as { port: number }).port
    const smtpPort = (smtp.server.address() as { port: number }).port
    const port = await freePort()
    issuer = `https://localhost:${port}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["repo:read", "repo:write", "repo:delete"]',
        `resources = ["${GIT}"]`,
        '',
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${port}"`,
        `introspectors = ["spiffe://${TD}/rs/"]`,
        '[broker.signals]',
        `receivers = ["spiffe://${TD}/rs/"]`,
        '[broker.intents]',
        'poll_interval = "1s"',
        'max_autonomous_risk = 0.5',
        // the agent's history counts, lightly here: the last intent of this file comes after a refusal, a denial and a reuse
        'history = { refusal_weight = 0.05, denial_weight = 0.05, mismatch_weight = 0.1 }',
        'console_url = "https://console.intents.test/approvals/{id}"',
        '[[broker.intents.actions]]',
        'match = "repo:read"',
        '[[broker.intents.actions]]',
        'match = "repo:write"',
        'weight = 0.4',
        '[[broker.intents.actions]]',
        'match = "repo:delete"',
        'forbid = true',
        '[[broker.intents.namespaces]]',
        `prefix = "spiffe://${TD}/agents/"`,
        'approver_group = "repo-owners"',
        '[broker.intents.approver_groups.repo-owners]',
        `webhook_url = "http://127.0.0.1:${hookPort}/hook"`,
        'email = ["owners@intents.test"]',
        '[broker.intents.smtp]',
        'host = "127.0.0.1"',
        `port = ${smtpPort}`,
        'from = "warrant@intents.test"',
      ].join('\n'),
    })
    socket = join(server.dataDir, 'private', 'broker-admin.sock')
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const node = await agent.attested()
    const sel = `unix:uid:${process.getuid!()}`
    for (const id of [AGENT_ID, RS_ID]) {
      const created = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', node, '--selector', sel])
      expect(created.code, created.stderr).toBe(0)
    }
    // Both SVIDs go to this (test) process: told apart by their URI SAN.
    const out = join(tmp.dir, 'svid')
    await waitFor(
      'both SVIDs on disk',
      async () => (await agent!.api(['fetch', 'x509', '--write', out])).code === 0 && readdirSync(out).filter((f) => /^svid\.\d+\.pem$/.test(f)).length === 2,
      { timeoutMs: 30_000, hint: () => agent!.output() },
    )
    const ca = readFileSync(server.bundlePemPath, 'utf8')
    for (const f of readdirSync(out).filter((x) => /^svid\.\d+\.pem$/.test(x))) {
      const cert = readFileSync(join(out, f), 'utf8')
      const tls = { ca, cert, key: readFileSync(join(out, f.replace('.pem', '.key')), 'utf8') }
      if (new X509Certificate(cert).subjectAltName?.includes(AGENT_ID)) agentTls = tls
      else rsTls = tls
    }
    await waitFor('the broker metadata', async () => (await httpsFetch({ ca })(`${issuer}/.well-known/oauth-authorization-server`, {})).status === 200, {
      timeoutMs: 30_000,
      hint: () => server!.output(),
    })
    const task = await warrant([
      'task',
      'create',
      '--socket',
      socket,
      '--agent',
      AGENT_ID,
      '--scope',
      'repo:read',
      '--scope',
      'repo:write',
      '--scope',
      'repo:delete',
      '--resource',
      GIT,
      '--ttl',
      '1h',
      '--task-id',
      'intent-task',
    ])
    expect(task.code, task.stderr).toBe(0)
  }, 180_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGTERM')
    await new Promise<void>((r) => hookServer.close(() => r()))
    await new Promise<void>((r) => smtp.close(() => r()))
    tmp.cleanup()
  })

  const opts = () => ({ [oauth.customFetch]: httpsFetch(agentTls) as never })
  const client: oauth.Client = { client_id: AGENT_ID }
  const discover = async () =>
    oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { ...opts(), algorithm: 'oauth2' }))
  /** Runs a token-endpoint call, answering use_dpop_nonce once (oauth4webapi keeps the nonce). */
  const withNonce = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      if (!oauth.isDPoPNonceError(err)) throw err
      return fn()
    }
  }
  const report = async (params: Record<string, string>) => {
    const r = await httpsFetch(rsTls)(`${issuer}/intents/outcome`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params).toString(),
    })
    return { status: r.status, body: (await r.json()) as Record<string, unknown> }
  }
  const introspect = async (token: string) =>
    (await (
      await httpsFetch(rsTls)(`${issuer}/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(),
      })
    ).json()) as { active: boolean }

  it('advertises CIBA; a low-risk intent is approved by rule and its action-bound token used once', async () => {
    const as = await discover()
    expect(as.backchannel_authentication_endpoint).toBe(`${issuer}/bc-authorize`)
    expect(as.grant_types_supported).toContain('urn:openid:params:grant-type:ciba')
    expect(as.authorization_details_types_supported).toContain('warrant_intent')
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    const res = await withNonce(async () =>
      oauth.processClientCredentialsResponse(
        as,
        client,
        await oauth.clientCredentialsGrantRequest(
          as,
          client,
          oauth.TlsClientAuth(),
          { task_id: 'intent-task', authorization_details: intent('repo:read', 'org/repo/README.md', 0.1) },
          { ...opts(), DPoP },
        ),
      ),
    )
    expect(res.token_type).toBe('dpop')
    const claims = decodeJwt(res.access_token)
    expect(claims).toMatchObject({ sub: AGENT_ID, aud: GIT, scope: 'repo:read', authorization_details: [{ type: 'warrant_intent', actions: ['repo:read'] }] })
    expect(claims.exp! - claims.iat!).toBe(60)
    const id = (res as unknown as { intent_id: string }).intent_id
    const shown = await warrantJson<{ status: string; node_attestation?: string; decided_by: string }>(['approval', 'show', id, '--socket', socket])
    expect(shown).toMatchObject({ status: 'approved', decided_by: 'threshold:0.5', node_attestation: 'join_token' })

    expect((await introspect(res.access_token)).active).toBe(true)
    const used = await report({ jti: claims.jti!, action: 'repo:read', resource: `${GIT}org/repo/README.md`, phase: 'before' })
    expect(used).toMatchObject({ status: 200, body: { outcome: 'match', status: 'used' } })
    // once: the token is spent
    expect((await introspect(res.access_token)).active).toBe(false)
    const twice = await report({ jti: claims.jti!, action: 'repo:read', resource: `${GIT}org/repo/README.md`, phase: 'before' })
    expect(twice).toMatchObject({ status: 403, body: { error: 'access_denied', outcome: 'mismatch', reasons: ['reuse'] } })
  }, 60_000)

  it('a high-risk intent waits over CIBA, approvers are notified, warrant approval approve, then the poll returns the token', async () => {
    const as = await discover()
    const ciba = await oauth.processBackchannelAuthenticationResponse(
      as,
      client,
      await oauth.backchannelAuthenticationRequest(
        as,
        client,
        oauth.TlsClientAuth(),
        { authorization_details: intent('repo:write', 'org/repo/main', 0.8), binding_message: 'push the release branch' },
        opts(),
      ),
    )
    expect(ciba.interval).toBe(1)
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    const poll = () =>
      withNonce(async () =>
        oauth.processBackchannelAuthenticationGrantResponse(
          as,
          client,
          await oauth.backchannelAuthenticationGrantRequest(as, client, oauth.TlsClientAuth(), ciba.auth_req_id, { ...opts(), DPoP }),
        ),
      )
    await expect(poll()).rejects.toMatchObject({ error: 'authorization_pending' })

    const pending = await warrantJson<{ approvals: { id: string; risk: number; approver_group: string; binding_message: string; factors: unknown[] }[] }>([
      'approval',
      'list',
      '--socket',
      socket,
    ])
    expect(pending.approvals).toHaveLength(1)
    const it0 = pending.approvals[0]!
    expect(it0).toMatchObject({ approver_group: 'repo-owners', binding_message: 'push the release branch' })
    expect(it0.risk).toBeGreaterThan(0.5)
    await waitFor('the webhook and the email', () => hooks.length >= 1 && mails.length >= 1, { timeoutMs: 15_000, hint: () => server!.output() })
    expect(String(hooks[0]!.text)).toContain(`${AGENT_ID} wants repo:write on ${GIT}org/repo/main`)
    expect(JSON.stringify(hooks[0]!.blocks)).toContain(`https://console.intents.test/approvals/${it0.id}`)
    expect(mails[0]).toContain('owners@intents.test')
    expect(mails[0]).toContain(`https://console.intents.test/approvals/${it0.id}`)

    const approved = await warrant(['approval', 'approve', it0.id, '--reason', 'release day', '--socket', socket])
    expect(approved.code, approved.stderr).toBe(0)
    expect(approved.stdout).toContain(`as cli:${process.getuid!()}`)
    await new Promise((r) => setTimeout(r, 1100))
    const tok = await poll()
    expect(decodeJwt(tok.access_token)).toMatchObject({
      scope: 'repo:write',
      authorization_details: [{ actions: ['repo:write'], locations: [`${GIT}org/repo/main`] }],
    })
    const shown = await warrantJson<{ status: string; approver: { id: string; method: string }; reason: string }>([
      'approval',
      'show',
      it0.id,
      '--socket',
      socket,
    ])
    expect(shown).toMatchObject({ status: 'approved', approver: { id: `cli:${process.getuid!()}`, method: 'unix-socket' }, reason: 'release day' })
  }, 60_000)

  it('a denied intent answers access_denied; a forbidden one is refused at once', async () => {
    const as = await discover()
    const ciba = await oauth.processBackchannelAuthenticationResponse(
      as,
      client,
      await oauth.backchannelAuthenticationRequest(
        as,
        client,
        oauth.TlsClientAuth(),
        { authorization_details: intent('repo:write', 'org/other', 0.9) },
        opts(),
      ),
    )
    const [pending] = (await warrantJson<{ approvals: { id: string }[] }>(['approval', 'list', '--socket', socket])).approvals
    const denied = await warrant(['approval', 'deny', pending!.id, '--reason', 'not today', '--socket', socket])
    expect(denied.code, denied.stderr).toBe(0)
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    await expect(
      withNonce(async () =>
        oauth.processBackchannelAuthenticationGrantResponse(
          as,
          client,
          await oauth.backchannelAuthenticationGrantRequest(as, client, oauth.TlsClientAuth(), ciba.auth_req_id, { ...opts(), DPoP }),
        ),
      ),
    ).rejects.toMatchObject({ error: 'access_denied' })

    const forbidden = await oauth.backchannelAuthenticationRequest(
      as,
      client,
      oauth.TlsClientAuth(),
      { authorization_details: intent('repo:delete', 'org/repo') },
      opts(),
    )
    expect(forbidden.status).toBe(403)
    expect(await forbidden.json()).toEqual({ error: 'access_denied' })
    const refused = await warrantJson<{ approvals: { decided_by: string; action: string }[] }>(['approval', 'list', '--status', 'refused', '--socket', socket])
    expect(refused.approvals).toEqual([expect.objectContaining({ action: 'repo:delete', decided_by: 'forbid:action:repo:delete' })])
  }, 60_000)

  it('an outcome that does not match is refused, recorded in the audit log and raised as a Shared Signal about the agent', async () => {
    // the resource server listens for signals on a poll stream
    const ssf = (method: string, path: string, body: unknown) =>
      httpsFetch(rsTls)(`${issuer}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const stream = (await (await ssf('POST', '/ssf/streams', { events_requested: [SESSION_REVOKED] })).json()) as { stream_id: string }
    expect(stream.stream_id).toBeTruthy()

    const as = await discover()
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    const res = await withNonce(async () =>
      oauth.processClientCredentialsResponse(
        as,
        client,
        await oauth.clientCredentialsGrantRequest(
          as,
          client,
          oauth.TlsClientAuth(),
          { task_id: 'intent-task', authorization_details: intent('repo:read', 'org/repo/a.txt') },
          { ...opts(), DPoP },
        ),
      ),
    )
    const jti = decodeJwt(res.access_token).jti!
    // the gateway sees a write where a read was declared: refused before it happens
    const mismatch = await report({ jti, action: 'repo:write', resource: `${GIT}org/repo/a.txt`, phase: 'before' })
    expect(mismatch).toMatchObject({ status: 403, body: { error: 'access_denied', outcome: 'mismatch', refused: true, reasons: ['action'] } })
    const id = mismatch.body.intent_id as string
    expect((await warrantJson<{ status: string }>(['approval', 'show', id, '--socket', socket])).status).toBe('mismatch')
    expect((await introspect(res.access_token)).active).toBe(false)

    const audited = await waitFor(
      'the mismatch in the broker audit log',
      async () => {
        const rows = await warrantJson<{ event: Record<string, unknown> }[]>([
          'audit',
          'search',
          '--log',
          join(server!.dataDir, 'broker-audit.sqlite3'),
          '--type',
          'approval',
        ])
        return rows.some((r) => (r.event.attributes as Record<string, unknown>).intent_id === id && r.event.reason === 'ERR_INTENT_MISMATCH') ? rows : undefined
      },
      { timeoutMs: 20_000, hint: () => server!.output() },
    )
    const stages = audited.map((r) => r.event.attributes as Record<string, unknown>)
    expect(stages.some((a) => a.stage === 'approved' && a.approver === `cli:${process.getuid!()}`)).toBe(true)
    expect(stages.some((a) => a.stage === 'declared' && a.rule === 'forbid:action:repo:delete')).toBe(true)
    expect(stages.find((a) => a.intent_id === id && a.stage === 'outcome')).toMatchObject({ mismatch: 'action', reported_action: 'repo:write' })

    const sets = await waitFor(
      'the session-revoked signal about the agent',
      async () => {
        const polled = (await (await ssf('POST', `/ssf/poll/${stream.stream_id}`, { returnImmediately: true })).json()) as { sets: Record<string, string> }
        const about = Object.values(polled.sets)
          .map((s) => decodeJwt(s) as { sub_id?: Record<string, unknown>; events: Record<string, Record<string, unknown>> })
          .filter((c) => c.sub_id?.format === 'uri' && c.sub_id.uri === AGENT_ID)
        return about.length > 0 ? about : undefined
      },
      { timeoutMs: 20_000, hint: () => server!.output() },
    )
    expect(JSON.stringify(sets[0]!.events[SESSION_REVOKED])).toContain(`warrant intent ${id} mismatch (action)`)
    expect(server!.output()).not.toContain(res.access_token)
  }, 90_000)
})
