/**
 * The console in process over real HTTPS with demo data and an in-memory
 * approval queue: security headers, cookie attributes, CSRF on every POST,
 * the bootstrap token (once), TOTP setup and login (a code used once),
 * sessions (new id at login, idle and absolute expiry, logout), the login
 * rate limit, approvals and revocations recorded with the operator's
 * identity and method, escaping, and no secret rendered after setup.
 */
import net from 'node:net'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Secret, TOTP } from 'otpauth'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { parseConsoleConfig, type ConsoleConfig } from '../../../src/console/config.js'
import { CONTENT_SECURITY_POLICY, SESSION_COOKIE, startConsoleServer, type ConsoleServer } from '../../../src/console/console-server.js'
import { escapeHtml, html } from '../../../src/console/html.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { makeCa, makeSvid, pem, type Ca } from '../../helpers/broker-http-fixtures.js'
import { tempDir } from '../../helpers/temp.js'
import { ConsoleClient, csrfOf } from './console-client.js'
import { demoBackend, demoIntent, type DemoBackend } from './demo-backend.js'

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('html', () => {
  it('escapes every interpolation, keeps nested html, joins arrays, drops nullish and false', () => {
    const evil = `<script>alert("x")</script>'&\``
    expect(html`<p title="${evil}">${evil}</p>`.toString()).toBe(`<p title="${escapeHtml(evil)}">${escapeHtml(evil)}</p>`)
    expect(escapeHtml(evil)).not.toMatch(/[<>"'`]/)
    const items = ['a<', 'b'].map((x) => html`<li>${x}</li>`)
    expect(
      html`<ul>
        ${items}
      </ul>`
        .toString()
        .replace(/\s+/g, ''),
    ).toBe('<ul><li>a&lt;</li><li>b</li></ul>')
    expect(html`${undefined}${null}${false}${0}`.toString()).toBe('0')
  })
})

describe('console config', () => {
  const base = { baseDir: '/etc/w', dataDir: '/var/w' }
  it('is off without the section or when not enabled; defaults and paths', () => {
    expect(parseConsoleConfig({ console: undefined, ...base })).toBeUndefined()
    expect(parseConsoleConfig({ console: { enabled: false }, ...base })).toBeUndefined()
    const c = parseConsoleConfig({
      console: { enabled: true, public_url: 'https://console.example:9443', operators: [{ name: 'alice', totp_secret_file: 'a.totp' }] },
      ...base,
    })!
    expect(c).toMatchObject({ origin: 'https://console.example:9443', rpId: 'console.example', storePath: '/var/w/console.sqlite3', sessionIdleMs: 600_000 })
    expect(c.operators).toEqual([{ name: 'admin' }, { name: 'alice', totpSecretFile: '/etc/w/a.totp' }])
  })
  it('refuses unknown keys, http URLs, paths and a TTL below the idle time, with their paths', () => {
    const bad = (raw: Record<string, unknown>) => {
      try {
        parseConsoleConfig({ console: { enabled: true, ...raw }, ...base })
      } catch (err) {
        return (err as { code: string; message: string }).message
      }
      return 'accepted'
    }
    expect(bad({ nope: 1 })).toContain('broker.console')
    expect(bad({ public_url: 'http://x.example' })).toContain('broker.console.public_url')
    expect(bad({ public_url: 'https://x.example/console' })).toContain('broker.console.public_url')
    expect(bad({ session_idle: '10m', session_ttl: '5m' })).toContain('broker.console.session_ttl')
    expect(bad({ operators: [{ name: 'a' }, { name: 'a' }] })).toContain('listed twice')
  })
})

describe('console server', () => {
  const tmp = tempDir('wcs-')
  let ca: Ca
  let certPem: string
  let keyPem: string
  let clock = Date.now()
  let server: ConsoleServer | undefined
  let backend: DemoBackend
  let bootstrap: string | undefined
  const log = captureLogger()
  let n = 0

  beforeAll(async () => {
    ca = await makeCa('console.test')
    const svid = await makeSvid(ca, 'spiffe://console.test/warrant/broker', { dnsNames: ['localhost'] })
    certPem = svid.certPem
    keyPem = svid.keyPem
  })
  afterEach(async () => {
    await server?.close()
    server = undefined
  })
  afterAll(() => tmp.cleanup())

  async function start(over: Record<string, unknown> = {}, b: Partial<DemoBackend> = {}): Promise<{ client: ConsoleClient; cfg: ConsoleConfig }> {
    const port = await freePort()
    const cfg = parseConsoleConfig({
      console: { enabled: true, bind_address: `127.0.0.1:${port}`, public_url: `https://localhost:${port}`, session_idle: '5m', session_ttl: '20m', ...over },
      baseDir: tmp.dir,
      dataDir: join(tmp.dir, `d${n++}`),
    })!
    backend = { ...demoBackend(), ...b }
    bootstrap = undefined
    server = await startConsoleServer({
      config: cfg,
      backend,
      tls: { current: () => ({ certChainPem: certPem, keyPem }) },
      log,
      now: () => clock,
      onBootstrapToken: (t) => (bootstrap = t),
    })
    return { client: new ConsoleClient(server.url, pem(ca.certificate)), cfg }
  }

  const code = (secret: string) => TOTP.generate({ secret: Secret.fromBase32(secret), period: 30, timestamp: clock })

  /** Bootstrap → TOTP setup → TOTP login; returns the secret. */
  async function signIn(client: ConsoleClient): Promise<string> {
    let page = await client.get('/login')
    const r = await client.post('/bootstrap', { _csrf: csrfOf(page.body), token: bootstrap! })
    expect(r.status).toBe(303)
    expect(r.headers.location).toBe('/setup')
    // a setup session registers a credential and nothing else
    expect((await client.get('/instances')).headers.location).toBe('/login')
    page = await client.get('/setup')
    const offered = await client.post('/setup/totp', { _csrf: csrfOf(page.body) })
    const secret = /<code>([A-Z2-7]+)<\/code>/.exec(offered.body)![1]!
    const confirmed = await client.post('/setup/totp/confirm', { _csrf: csrfOf(offered.body), code: code(secret) })
    expect(confirmed.headers.location).toBe('/login?done=totp')
    await logIn(client, secret)
    return secret
  }

  /** A TOTP login in the next time step (a code is accepted once). */
  async function logIn(client: ConsoleClient, secret: string): Promise<void> {
    clock += 30_000
    const page = await client.get('/login')
    const login = await client.post('/login/totp', { _csrf: csrfOf(page.body), operator: 'admin', code: code(secret) })
    expect(login.headers.location).toBe('/')
  }

  it('serves every page with the strict CSP, no framing, nosniff, no-store; the cookie is __Host-, HttpOnly, Secure, SameSite=Strict', async () => {
    const { client } = await start()
    const r = await client.get('/login')
    expect(r.status).toBe(200)
    expect(r.headers['content-security-policy']).toBe(CONTENT_SECURITY_POLICY)
    expect(CONTENT_SECURITY_POLICY).toContain("default-src 'self'")
    expect(CONTENT_SECURITY_POLICY).toContain("frame-ancestors 'none'")
    expect(CONTENT_SECURITY_POLICY).not.toContain('unsafe-inline')
    expect(r.headers['x-frame-options']).toBe('DENY')
    expect(r.headers['x-content-type-options']).toBe('nosniff')
    expect(r.headers['cache-control']).toBe('no-store')
    const cookie = (r.headers['set-cookie'] as string[])[0]!
    expect(cookie.startsWith(`${SESSION_COOKIE}=`)).toBe(true)
    expect(cookie).toMatch(/; HttpOnly/)
    expect(cookie).toMatch(/; Secure/)
    expect(cookie).toMatch(/; SameSite=Strict/)
    expect(cookie).toMatch(/; Path=\//)
    // no inline script or style anywhere: the only script is /static/console.js
    expect(r.body).not.toMatch(/<script>|<script [^>]*>[^<]|style=/)
    expect(r.body).toContain('<script src="/static/console.js" defer></script>')
    expect((await client.get('/static/console.js')).headers['content-type']).toMatch(/^text\/javascript/)
    expect((await client.get('/nope')).headers['content-security-policy']).toBe(CONTENT_SECURITY_POLICY)
  })

  it('refuses a POST without the CSRF token, with another session’s token, or from another origin', async () => {
    const { client } = await start()
    const page = await client.get('/login')
    const csrf = csrfOf(page.body)
    const other = new ConsoleClient(client.base, client.ca)
    const otherCsrf = csrfOf((await other.get('/login')).body)
    expect((await client.post('/bootstrap', { token: bootstrap! })).status).toBe(403)
    expect((await client.post('/bootstrap', { _csrf: otherCsrf, token: bootstrap! })).status).toBe(403)
    expect((await client.post('/bootstrap', { _csrf: csrf, token: bootstrap! }, { origin: 'https://evil.example' })).status).toBe(403)
    expect((await client.request('POST', '/login/webauthn/options', { json: {} })).status).toBe(403)
    expect(log.lines.some((l) => l.msg === 'Console request refused' && l.fields.error_code === 'ERR_CSRF')).toBe(true)
    // the token was not consumed by the refused requests: the real one still works
    expect((await client.post('/bootstrap', { _csrf: csrf, token: bootstrap! }, { origin: client.base })).headers.location).toBe('/setup')
    // a JSON POST carries it in the header
    const opts = await client.request('POST', '/setup/webauthn/options', { json: {}, headers: { 'x-csrf-token': csrfOf((await client.get('/setup')).body) } })
    expect(opts.status).toBe(200)
    expect(JSON.parse(opts.body)).toMatchObject({ rp: { id: 'localhost' }, authenticatorSelection: { userVerification: 'required' } })
  })

  it('the bootstrap token works once; setup shows the TOTP secret once; login makes a new session id; the secret is never rendered again', async () => {
    const { client } = await start()
    const token = bootstrap!
    expect(token.length).toBeGreaterThan(20)
    expect(log.lines.some((l) => JSON.stringify(l).includes(token))).toBe(false)
    const pre = client.cookie
    const secret = await signIn(client)
    expect(client.cookie).not.toBe(pre)
    const home = await client.get('/')
    expect(home.status).toBe(200)
    expect(home.body).toContain('Signed in as <strong>admin</strong>')
    for (const p of ['/', '/approvals', '/instances', '/revocations', '/audit', '/signals', '/setup']) {
      const r = await client.get(p)
      expect(r.body, p).not.toContain(secret)
    }
    expect((await client.get('/setup')).status).toBe(303)
    // the token is spent
    const anon = new ConsoleClient(client.base, client.ca)
    const r = await anon.post('/bootstrap', { _csrf: csrfOf((await anon.get('/login')).body), token })
    expect(r.headers.location).toBe('/login?error=login')
    expect(log.lines.some((l) => l.msg === 'Console sign-in failed' && l.fields.reason === 'no bootstrap token is outstanding')).toBe(true)
    // no secret in the store file's neighbours' logs
    expect(log.lines.some((l) => JSON.stringify(l).includes(secret))).toBe(false)
    expect(readdirSync(join(tmp.dir)).length).toBeGreaterThan(0)
  })

  it('a TOTP code is accepted once; a wrong one tells little and is logged with its reason', async () => {
    const { client } = await start()
    const secret = await signIn(client)
    const c = code(secret)
    const again = new ConsoleClient(client.base, client.ca)
    const r = await again.post('/login/totp', { _csrf: csrfOf((await again.get('/login')).body), operator: 'admin', code: c })
    expect(r.headers.location).toBe('/login?error=login')
    expect(log.lines.some((l) => l.fields.reason === 'TOTP code already used')).toBe(true)
    const wrong = await again.post('/login/totp', { _csrf: csrfOf((await again.get('/login')).body), operator: 'nobody', code: '123456' })
    expect(wrong.headers.location).toBe('/login?error=login')
    const page = await again.get('/login?error=login')
    expect(page.body).toContain('Sign-in failed.')
    expect(page.body).not.toContain('unknown operator')
  })

  it('a passkey assertion without its challenge, or forged, fails with one generic answer and is logged', async () => {
    const { client } = await start()
    const csrf = csrfOf((await client.get('/login')).body)
    const h = { 'x-csrf-token': csrf }
    const forged = {
      id: 'AAAA',
      rawId: 'AAAA',
      type: 'public-key',
      response: { clientDataJSON: 'e30', authenticatorData: 'AAAA', signature: 'AAAA' },
      clientExtensionResults: {},
    }
    const noChallenge = await client.request('POST', '/login/webauthn', { json: forged, headers: h })
    expect([noChallenge.status, JSON.parse(noChallenge.body)]).toEqual([401, { error: 'login failed' }])
    expect(log.lines.some((l) => l.fields.reason === 'no login challenge in this session')).toBe(true)
    const opts = JSON.parse((await client.request('POST', '/login/webauthn/options', { json: {}, headers: h })).body) as { challenge: string; rpId: string }
    expect(opts.rpId).toBe('localhost')
    const unknown = await client.request('POST', '/login/webauthn', { json: forged, headers: h })
    expect([unknown.status, JSON.parse(unknown.body)]).toEqual([401, { error: 'login failed' }])
    expect(log.lines.some((l) => l.fields.reason === 'unknown credential')).toBe(true)
    // the challenge is single-use: a second try has none
    expect((await client.request('POST', '/login/webauthn', { json: forged, headers: h })).status).toBe(401)
    expect((await client.get('/')).status).toBe(303)
  })

  it('rate-limits failed logins per address', async () => {
    const { client } = await start({ login_attempts: 3 })
    const secret = await signIn(client)
    const c = new ConsoleClient(client.base, client.ca)
    for (let i = 0; i < 3; i++) {
      const r = await c.post('/login/totp', { _csrf: csrfOf((await c.get('/login')).body), operator: 'admin', code: '000000' })
      expect(r.headers.location).toBe('/login?error=login')
    }
    clock += 30_000
    const blocked = await c.post('/login/totp', { _csrf: csrfOf((await c.get('/login')).body), operator: 'admin', code: code(secret) })
    expect(blocked.headers.location).toBe('/login?error=limited')
    clock += 300_000 // the window passes
    const ok = await c.post('/login/totp', { _csrf: csrfOf((await c.get('/login')).body), operator: 'admin', code: code(secret) })
    expect(ok.headers.location).toBe('/')
  })

  it('sessions end after the idle time, after the absolute lifetime however active, and at logout', async () => {
    const { client } = await start()
    const secret = await signIn(client)
    expect((await client.get('/instances')).status).toBe(200)
    clock += 5 * 60_000 + 1 // idle
    const idle = await client.get('/instances')
    expect(idle.status).toBe(303)
    expect(idle.headers.location).toBe('/login?done=expired')
    await logIn(client, secret)
    for (let i = 0; i < 5; i++) {
      clock += 4 * 60_000 // active every 4 minutes, under the idle limit
      expect((await client.get('/')).status, `minute ${(i + 1) * 4}`).toBe(i < 4 ? 200 : 303)
    }
    await logIn(client, secret)
    const page = await client.get('/')
    const stolen = client.cookie
    const out = await client.post('/logout', { _csrf: csrfOf(page.body) })
    expect(out.headers.location).toBe('/login?done=logout')
    const replay = new ConsoleClient(client.base, client.ca)
    replay.cookie = stolen
    expect((await replay.get('/')).status).toBe(303)
  })

  it('pages need an operator session; approvals and revocations are recorded with the operator and method; decided intents refuse a second decision', async () => {
    const { client } = await start()
    const anon = new ConsoleClient(client.base, client.ca)
    for (const p of ['/', '/approvals', '/instances', '/revocations', '/audit', '/signals']) expect((await anon.get(p)).headers.location, p).toBe('/login')
    await signIn(client)
    let page = await client.get('/approvals')
    expect(page.body).toContain('int-1')
    expect(page.body).toMatch(/<svg\s+class="risk"/)
    expect(page.body).toMatch(/<svg\s+class="chain"/)
    const approve = await client.post('/approvals/int-1/decide', { _csrf: csrfOf(page.body), decision: 'approve', reason: 'on call, checked' })
    expect(approve.headers.location).toBe('/approvals?done=approved')
    expect(await backend.approvals.get('int-1')).toMatchObject({ status: 'approved', approver: { id: 'admin', method: 'totp' }, reason: 'on call, checked' })
    const deny = await client.post('/approvals/int-2/decide', { _csrf: csrfOf(page.body), decision: 'deny' })
    expect(deny.headers.location).toBe('/approvals?done=denied')
    expect(await backend.approvals.get('int-2')).toMatchObject({ status: 'denied', approver: { id: 'admin', method: 'totp' } })
    const one = await client.get('/approvals/int-1')
    expect(one.body).toContain('Decided by <strong>admin</strong> (totp): on call, checked')
    expect((await client.get('/approvals/nope')).status).toBe(404)
    const twice = await client.post('/approvals/int-1/decide', { _csrf: csrfOf(page.body), decision: 'deny' })
    expect(twice.headers.location).toBe('/approvals?error=decision')
    // without the token nothing is decided
    backend.approvals.add(demoIntent('int-3'))
    expect((await client.post('/approvals/int-3/decide', { decision: 'approve' })).status).toBe(403)
    expect((await backend.approvals.get('int-3'))?.status).toBe('pending')

    page = await client.get('/instances')
    expect(page.body).toContain('spiffe://demo.example/agents/planner/instance/7f3a')
    expect((await client.post('/revoke', { level: 'instance', value: 'spiffe://demo.example/agents/planner/instance/7f3a', reason: 'x' })).status).toBe(403)
    expect(backend.revoked).toEqual([])
    const rv = await client.post('/revoke', {
      _csrf: csrfOf(page.body),
      level: 'instance',
      value: 'spiffe://demo.example/agents/planner/instance/7f3a',
      reason: 'compromised',
    })
    expect(rv.headers.location).toBe('/revocations?done=revoked')
    expect(backend.revoked).toEqual([
      { level: 'instance', value: 'spiffe://demo.example/agents/planner/instance/7f3a', reason: 'compromised', by: 'admin/totp' },
    ])
    expect((await client.post('/revoke', { _csrf: csrfOf(page.body), level: 'prefix', value: 'spiffe://demo.example/', reason: 'x' })).headers.location).toBe(
      '/revocations?error=revoke',
    )
  })

  it('escapes what the broker reports; says when approvals, audit or signals are not configured', async () => {
    const { client } = await start()
    backend.approvals.add(demoIntent('int-x', { resource: '<script>alert(1)</script>', action: '"><img src=x onerror=alert(1)>' }))
    await signIn(client)
    const page = await client.get('/approvals')
    expect(page.body).not.toContain('<script>alert(1)</script>')
    expect(page.body).not.toContain('<img src=x')
    expect(page.body).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    await server!.close()
    server = undefined
    const bare = await start({}, { approvals: undefined, audit: undefined, signals: undefined } as never)
    await signIn(bare.client)
    expect((await bare.client.get('/approvals')).body).toContain('Approvals are not configured')
    expect((await bare.client.get('/audit')).body).toContain('keeps no audit log')
    expect((await bare.client.get('/signals')).body).toContain('receives no Shared Signals')
    expect((await bare.client.get('/')).body).toMatch(/<svg\s+class="chart"/)
  })

  it('src/console imports from the broker only the intents contract', () => {
    const dir = join(import.meta.dirname, '..', '..', '..', 'src', 'console')
    const bad = readdirSync(dir)
      .filter((f) => f.endsWith('.ts'))
      .flatMap((f) => [...readFileSync(join(dir, f), 'utf8').matchAll(/from '(\.\.\/[^']+)'/g)].map((m) => m[1]!))
      .filter((s) => s.startsWith('../broker/') && s !== '../broker/intents/contract.js')
    expect(bad).toEqual([])
  })
})
