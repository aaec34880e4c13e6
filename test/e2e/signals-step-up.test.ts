/**
 * The `step_up` response-policy action end to end (issue 22): two `warrant
 * server run` processes with their embedded brokers. A's broker transmits
 * (push) to B's broker, whose policy maps `session-revoked` about
 * `spiffe://b.example/agents/...` to `step_up` of that agent, and which runs
 * intents (`[broker.intents]`, a read approved by rule otherwise). B's agent
 * (a real `warrant agent run`, join token) serves the agent's X.509-SVID to
 * this process, which speaks OAuth with oauth4webapi (mutual TLS, DPoP).
 *
 * `warrant signal send` on A: at B the agent's next plain token request is
 * refused with `interaction_required` (pointing at /bc-authorize), also after
 * B restarts; its next intent (a read) waits for a human, the decision naming
 * the signal; `warrant approval approve` satisfies the step-up and the agent
 * gets tokens again. A second signal's step-up is cleared by an operator
 * (`warrant signal clear-step-up`). B's audit log names the signal for each.
 */
import { X509Certificate, createHash } from 'node:crypto'
import https from 'node:https'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, waitFor, warrant, warrantJson } from '../helpers/e2e-cluster.js'
import { freePort } from '../helpers/e2e-procs.js'
import { tempDir } from '../helpers/temp.js'

const A = 'a.example'
const B = 'b.example'
const AGENT_ID = `spiffe://${B}/agents/a1`
const GIT = 'https://git.b.example/'

interface Tls {
  ca: string
  cert: string
  key: string
}

/** One HTTPS request with the agent's client certificate; the answer as a fetch Response (oauth4webapi's customFetch). */
function httpsFetch(tls: Tls) {
  return (url: string, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: unknown }): Promise<Response> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {}
      new Headers(init.headers).forEach((v, k) => (headers[k] = v))
      const body = init.body === undefined || init.body === null ? undefined : String(init.body)
      const req = https.request(url, { method: init.method ?? 'GET', headers, ca: tls.ca, cert: tls.cert, key: tls.key, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const h = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
          const status = res.statusCode ?? 0
          resolve(new Response(status === 204 ? null : Buffer.concat(chunks), { status, headers: h }))
        })
      })
      req.on('error', reject)
      if (body !== undefined) req.write(body)
      req.end()
    })
}

const digest = (s: string) => createHash('sha256').update(s).digest('base64url')
const intent = (action: string, path: string) =>
  JSON.stringify([{ type: 'warrant_intent', actions: [action], locations: [`${GIT}${path}`], params_digest: digest(`${action} ${path}`), task: 'su-task' }])

type Signal = { id: number; jti: string; outcome: string; decision: { action?: string; target?: string; value?: string } | null }
type StepUpWire = {
  id: number
  target: string
  value: string
  signal: { jti: string; event_type: string }
  cleared?: { by: string }
  satisfied: { agent: string; intent_id: string }[]
}

describe('Shared Signals step-up e2e: a signal routes the agent through human approval (separate processes)', () => {
  const tmp = tempDir('wsu-')
  let serverA: E2eServer
  let serverB: E2eServer
  let agent: E2eAgent | undefined
  let issuerA = ''
  let issuerB = ''
  let tls: Tls
  const brokerSock = (s: E2eServer) => join(s.dataDir, 'private', 'broker-admin.sock')
  const signalsAtB = async () => (await warrantJson<{ signals: Signal[] }>(['signal', 'list', '--store', join(serverB.dataDir, 'broker-ssf.sqlite3')])).signals
  const stepUpsAtB = async (all = false) =>
    (await warrantJson<{ step_ups: StepUpWire[] }>(['signal', 'step-ups', ...(all ? ['--all'] : []), '--socket', brokerSock(serverB)])).step_ups
  const hint = () => `--- A ---\n${serverA?.output().slice(-3000)}\n--- B ---\n${serverB?.output().slice(-4000)}`

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()]
    issuerA = `https://localhost:${portA}`
    issuerB = `https://localhost:${portB}`
    serverA = await E2eServer.start({
      dir: join(tmp.dir, 'sa'),
      trustDomain: A,
      serverTables: [
        '[broker]',
        `issuer = "${issuerA}"`,
        `bind_address = "127.0.0.1:${portA}"`,
        `federated_trust_domains = ["${B}"]`,
        '[broker.signals]',
        `receivers = ["spiffe://${B}/warrant/broker"]`,
      ].join('\n'),
    })
    serverB = await E2eServer.start({
      dir: join(tmp.dir, 'sb'),
      trustDomain: B,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["repo:read", "repo:write"]',
        `resources = ["${GIT}"]`,
        '',
        '[broker]',
        `issuer = "${issuerB}"`,
        `bind_address = "127.0.0.1:${portB}"`,
        '[broker.signals]',
        '[[broker.signals.transmitters]]',
        `issuer = "${issuerA}"`,
        `ca_file = "${serverA.bundlePemPath}"`,
        'delivery = "push"',
        '[[broker.signals.policy]]',
        'event = "session-revoked"',
        `match = { prefix = "spiffe://${B}/agents/" }`,
        'action = "step_up"',
        'target = "instance"',
        '[broker.intents]',
        'poll_interval = "1s"',
        'max_autonomous_risk = 0.5',
        // signals received about the agent weigh nothing here: only the step-up can send its read to a human
        'history = { signal_weight = 0 }',
        '[[broker.intents.actions]]',
        'match = "repo:read"',
      ].join('\n'),
    })
    const set = await serverA.cli(['bundle', 'set', '--trust-domain', B, '--format', 'spiffe', '--path', serverB.bundleSpiffePath])
    expect(set.code, set.stderr).toBe(0)
    await waitFor('B to subscribe at A', () => /SSF stream created at transmitter/.test(serverB.output()) || undefined, { timeoutMs: 60_000, hint })

    agent = E2eAgent.start({
      dir: join(tmp.dir, 'ag'),
      server: serverB,
      nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await serverB.joinToken()}"\n`,
    })
    const node = await agent.attested()
    const created = await serverB.cli(['entry', 'create', '--spiffe-id', AGENT_ID, '--parent-id', node, '--selector', `unix:uid:${process.getuid!()}`])
    expect(created.code, created.stderr).toBe(0)
    const out = join(tmp.dir, 'svid')
    await waitFor(
      "the agent's SVID on disk",
      async () => (await agent!.api(['fetch', 'x509', '--write', out])).code === 0 && readdirSync(out).some((f) => /^svid\.\d+\.pem$/.test(f)),
      { timeoutMs: 30_000, hint: () => agent!.output() },
    )
    const f = readdirSync(out).find((x) => /^svid\.\d+\.pem$/.test(x))!
    const cert = readFileSync(join(out, f), 'utf8')
    expect(new X509Certificate(cert).subjectAltName).toContain(AGENT_ID)
    tls = { ca: readFileSync(serverB.bundlePemPath, 'utf8'), cert, key: readFileSync(join(out, f.replace('.pem', '.key')), 'utf8') }
    const task = await warrant([
      'task',
      'create',
      '--socket',
      brokerSock(serverB),
      '--agent',
      AGENT_ID,
      '--scope',
      'repo:read',
      '--resource',
      GIT,
      '--ttl',
      '1h',
      '--task-id',
      'su-task',
    ])
    expect(task.code, task.stderr).toBe(0)
  }, 240_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    for (const s of [serverA, serverB]) await s?.stop('SIGKILL')
    tmp.cleanup()
  })

  const opts = () => ({ [oauth.customFetch]: httpsFetch(tls) as never })
  const client: oauth.Client = { client_id: AGENT_ID }
  const discover = async () =>
    oauth.processDiscoveryResponse(new URL(issuerB), await oauth.discoveryRequest(new URL(issuerB), { ...opts(), algorithm: 'oauth2' }))
  const withNonce = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      if (!oauth.isDPoPNonceError(err)) throw err
      return fn()
    }
  }
  /** A plain client_credentials token for the task (no intent). */
  const plainToken = async () => {
    const as = await discover()
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    return withNonce(async () =>
      oauth.processClientCredentialsResponse(
        as,
        client,
        await oauth.clientCredentialsGrantRequest(as, client, oauth.TlsClientAuth(), { task_id: 'su-task', scope: 'repo:read' }, { ...opts(), DPoP }),
      ),
    )
  }
  const expectStepUpRefusal = async () => {
    const err = await plainToken().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err, 'a plain token was issued while the step-up stands').toMatchObject({ error: 'interaction_required', status: 400 })
    expect((err as { error_description?: string }).error_description).toContain('/bc-authorize')
  }
  /** `warrant signal send` on A about the agent; resolves with the step-up B recorded for it. */
  const signalAndWait = async (reason: string, known: number) => {
    const sent = await warrantJson<{ streams: string[] }>([
      'signal',
      'send',
      '--event',
      'session-revoked',
      '--subject',
      AGENT_ID,
      '--reason',
      reason,
      '--socket',
      brokerSock(serverA),
    ])
    expect(sent.streams).toHaveLength(1)
    return waitFor(
      'B to step the agent up',
      async () => {
        const list = await stepUpsAtB(true)
        return list.length > known ? list[list.length - 1] : undefined
      },
      { timeoutMs: 60_000, hint },
    )
  }

  it('the agent gets plain tokens until a signal steps it up; then interaction_required, also after B restarts', async () => {
    expect((await plainToken()).access_token).toBeTruthy()
    const s = await signalAndWait('edr alert', 0)
    expect(s).toMatchObject({ target: 'instance', value: AGENT_ID, signal: { event_type: 'session-revoked' }, satisfied: [] })
    const [received] = await signalsAtB()
    expect(received).toMatchObject({ jti: s.signal.jti, outcome: 'applied', decision: { action: 'step_up', target: 'instance', value: AGENT_ID } })
    await expectStepUpRefusal()
    // kept in B's SSF store: a restart does not lift it
    await serverB.restart()
    await waitFor('B broker back', async () => (await warrant(['signal', 'step-ups', '--socket', brokerSock(serverB)])).code === 0, { timeoutMs: 60_000, hint })
    await waitFor(
      "B's token endpoint back",
      () =>
        plainToken().then(
          () => 'issued',
          (e: unknown) => ((e as { error?: string }).error === 'interaction_required' ? 'refused' : undefined),
        ),
      { timeoutMs: 30_000, hint },
    ).then((r) => expect(r).toBe('refused'))
    expect((await stepUpsAtB()).map((x) => x.id)).toEqual([s.id])
  }, 180_000)

  it("the agent's next intent (a read, approved by rule otherwise) waits for a human, naming the signal; the approval satisfies the step-up", async () => {
    const [s] = await stepUpsAtB()
    const as = await discover()
    const ciba = await oauth.processBackchannelAuthenticationResponse(
      as,
      client,
      await oauth.backchannelAuthenticationRequest(
        as,
        client,
        oauth.TlsClientAuth(),
        { authorization_details: intent('repo:read', 'org/repo/README.md') },
        opts(),
      ),
    )
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
    const pending = await warrantJson<{ approvals: { id: string; decided_by: string; factors: { rule: string; detail: string }[] }[] }>([
      'approval',
      'list',
      '--socket',
      brokerSock(serverB),
    ])
    expect(pending.approvals).toHaveLength(1)
    const p = pending.approvals[0]!
    expect(p.decided_by).toBe(`human:step_up:session-revoked:${s!.signal.jti}`)
    expect(p.factors).toContainEqual(expect.objectContaining({ rule: `step_up:${s!.id}`, detail: expect.stringContaining(s!.signal.jti) }))
    // still no plain token while the intent waits
    await expectStepUpRefusal()
    const approved = await warrant(['approval', 'approve', p.id, '--reason', 'checked with the owner', '--socket', brokerSock(serverB)])
    expect(approved.code, approved.stderr).toBe(0)
    // polled again no sooner than the CIBA interval (1 s), else slow_down
    const tok = await waitFor('the token of the approved intent', () => poll(), { intervalMs: 1100, timeoutMs: 20_000, hint })
    expect(tok.access_token).toBeTruthy()
    // satisfied: tokens again, and nothing stands
    expect((await plainToken()).access_token).toBeTruthy()
    expect(await stepUpsAtB()).toEqual([])
    expect((await stepUpsAtB(true))[0]).toMatchObject({ id: s!.id, satisfied: [{ agent: AGENT_ID, intent_id: p.id }] })
    const audited = await waitFor(
      "the step-up's satisfaction in B's audit log",
      async () => {
        const rows = await warrantJson<{ event: { type: string; attributes?: Record<string, unknown> } }[]>([
          'audit',
          'search',
          '--log',
          join(serverB.dataDir, 'broker-audit.sqlite3'),
          '--type',
          'signal',
        ])
        return rows.some((r) => r.event.attributes?.stage === 'satisfied') ? rows.map((r) => r.event.attributes!) : undefined
      },
      { timeoutMs: 20_000, hint },
    )
    expect(audited).toContainEqual(expect.objectContaining({ action: 'step_up', jti: s!.signal.jti, outcome: 'applied', target: 'instance' }))
    expect(audited).toContainEqual(expect.objectContaining({ action: 'step_up', stage: 'satisfied', jti: s!.signal.jti, intent_id: p.id }))
    const decisions = await warrantJson<{ event: { attributes?: Record<string, unknown> } }[]>([
      'audit',
      'search',
      '--log',
      join(serverB.dataDir, 'broker-audit.sqlite3'),
      '--type',
      'approval',
    ])
    expect(decisions.map((r) => r.event.attributes)).toContainEqual(
      expect.objectContaining({ stage: 'declared', intent_id: p.id, rule: `human:step_up:session-revoked:${s!.signal.jti}` }),
    )
  }, 120_000)

  it('an operator clears a step-up with warrant signal clear-step-up; the agent gets tokens again', async () => {
    const s = await signalAndWait('second alert', 1)
    await expectStepUpRefusal()
    const cleared = await warrantJson<StepUpWire>([
      'signal',
      'clear-step-up',
      '--id',
      String(s.id),
      '--reason',
      'false positive',
      '--socket',
      brokerSock(serverB),
    ])
    expect(cleared.cleared).toMatchObject({ by: `cli:${process.getuid!()}` })
    expect((await plainToken()).access_token).toBeTruthy()
    const again = await warrant(['signal', 'clear-step-up', '--id', String(s.id), '--socket', brokerSock(serverB)])
    expect(again.code).not.toBe(0)
  }, 120_000)
})
