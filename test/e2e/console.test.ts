/**
 * The operator console in a real browser: Debian's Chromium driven through
 * playwright-core (no browser download), with a virtual WebAuthn
 * authenticator (CDP WebAuthn domain).
 *
 * 1. Against a real `warrant server run` process with the embedded broker
 *    and `[broker.console]`, a real agent and tokens from `warrant token`:
 *    the bootstrap token the process printed registers a passkey; sign out;
 *    sign in with the passkey; the CSP header; intents declared by agent B (an agent process)
 *    over CIBA (with its SVID from the real agent) approved and denied in
 *    the console, the approved one then yielding its action-bound token;
 *    a POST without the CSRF token
 *    is refused and changes nothing; an instance revoked from the console
 *    has its token refused at introspection and cannot get a new one, while
 *    another instance is untouched.
 * 2. Against a console in this process (demo data, an in-memory approval
 *    queue, an injected clock): TOTP setup and sign-in in the browser,
 *    approve and deny from the approval queue, and the session ending after
 *    its idle time.
 */
import net from 'node:net'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Secret, TOTP } from 'otpauth'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConsoleConfig } from '../../src/console/config.js'
import { CONTENT_SECURITY_POLICY, startConsoleServer, type ConsoleServer } from '../../src/console/console-server.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { E2E_REPO, E2eAgent, E2eServer, fetchX509Until, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { Proc } from '../helpers/e2e-procs.js'
import { makeCa, makeSvid } from '../helpers/broker-http-fixtures.js'
import { tempDir } from '../helpers/temp.js'
import { demoBackend, type DemoBackend } from '../unit/console/demo-backend.js'

const CHROMIUM = '/usr/bin/chromium'
const TD = 'console.test'
const A = `spiffe://${TD}/agents/a`
const B = `spiffe://${TD}/agents/b`
const API = 'https://api.console.test/'

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

/** A page with a virtual platform authenticator (resident keys, user verification) that answers by itself. */
async function pageWithAuthenticator(context: BrowserContext): Promise<Page> {
  const page = await context.newPage()
  const cdp = await context.newCDPSession(page)
  await cdp.send('WebAuthn.enable')
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  })
  return page
}

describe.runIf(existsSync(CHROMIUM))('operator console in Chromium', () => {
  let browser: Browser

  beforeAll(async () => {
    browser = await launch()
  }, 60_000)
  afterAll(async () => {
    await browser?.close()
  })

  describe('against a real broker process', () => {
    const tmp = tempDir('wce-')
    let server: E2eServer | undefined
    let agent: E2eAgent | undefined
    let env: NodeJS.ProcessEnv
    let issuer: string
    let consoleUrl: string
    let bootstrap: string
    let context: BrowserContext
    let page: Page
    const keyA = join(tmp.dir, 'a.json')
    const keyB = join(tmp.dir, 'b.json')

    const tok = async (args: string[]) => {
      const r = await warrant(['token', ...args, '--output', 'json'], { env })
      return { ...r, json: () => JSON.parse(r.stdout) as Record<string, unknown> }
    }

    beforeAll(async () => {
      const port = await freePort()
      const cport = await freePort()
      issuer = `https://localhost:${port}`
      consoleUrl = `https://localhost:${cport}`
      server = await E2eServer.start({
        dir: join(tmp.dir, 's'),
        trustDomain: TD,
        serverTables: [
          '[server.bounds."/agents/"]',
          'scopes = ["read", "write"]',
          `resources = ["${API}"]`,
          'max_token_ttl = "10m"',
          'max_renewals = 3',
          '',
          '[broker]',
          `issuer = "${issuer}"`,
          `bind_address = "127.0.0.1:${port}"`,
          `introspectors = ["spiffe://${TD}/agents/"]`,
          '[broker.intents]',
          'poll_interval = "1s"',
          '[[broker.intents.actions]]',
          'match = "write"',
          'weight = 0.6',
          '[broker.console]',
          'enabled = true',
          `bind_address = "127.0.0.1:${cport}"`,
          `public_url = "${consoleUrl}"`,
        ].join('\n'),
      })
      bootstrap = await waitFor(
        'the console bootstrap token on standard output',
        () => /one-time bootstrap token for operator "admin": (\S+)/.exec(server!.output())?.[1],
        {
          timeoutMs: 30_000,
          hint: () => server!.output(),
        },
      )
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
        '--task-id',
        'console-task',
        '--output',
        'json',
      ])
      expect(task.code, task.stderr).toBe(0)
      env = { WARRANT_BROKER_URL: issuer, WARRANT_BROKER_CA: server.bundlePemPath, SPIFFE_ENDPOINT_SOCKET: `unix://${agent.socketPath}` }
      for (const [id, key] of [
        [A, keyA],
        [B, keyB],
      ] as const) {
        const r = await tok(['exchange', '--spiffe-id', id, '--task', 'console-task', '--scope', 'read', '--resource', API, '--key-file', key])
        expect(r.code, r.stderr).toBe(0)
      }
      context = await browser.newContext({ ignoreHTTPSErrors: true })
      page = await pageWithAuthenticator(context)
    }, 240_000)

    afterAll(async () => {
      await context?.close()
      await agent?.stop('SIGKILL')
      await server?.stop('SIGTERM')
      tmp.cleanup()
    })

    it('the bootstrap token registers a passkey; sign out; sign in with the passkey; the strict CSP on every page', async () => {
      const res = await page.goto(`${consoleUrl}/login`)
      expect(res!.status()).toBe(200)
      expect(res!.headers()['content-security-policy']).toBe(CONTENT_SECURITY_POLICY)
      expect(res!.headers()['x-frame-options']).toBe('DENY')
      await page.getByLabel('Bootstrap token').fill(bootstrap)
      await page.getByRole('button', { name: 'Continue' }).click()
      await page.waitForURL(`${consoleUrl}/setup`)
      await page.getByRole('button', { name: 'Register a passkey' }).click()
      await page.waitForURL(`${consoleUrl}/login?done=passkey`)
      await expect(page.getByRole('status').first().textContent()).resolves.toContain('Passkey registered')
      // the bootstrap form is gone: the token was one-time
      expect(await page.getByLabel('Bootstrap token').count()).toBe(0)

      await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
      await page.waitForURL(`${consoleUrl}/`)
      expect(await page.locator('header').textContent()).toContain('Signed in as admin (webauthn)')
      await page.getByRole('button', { name: 'Sign out' }).click()
      await page.waitForURL(`${consoleUrl}/login?done=logout`)
      expect((await page.goto(`${consoleUrl}/instances`))!.url()).toBe(`${consoleUrl}/login`)

      await page.getByRole('button', { name: 'Sign in with a passkey' }).click()
      await page.waitForURL(`${consoleUrl}/`)
      for (const p of ['/', '/approvals', '/instances', '/revocations', '/audit', '/signals']) {
        const r = await page.goto(`${consoleUrl}${p}`)
        expect(r!.status(), p).toBe(200)
        expect(r!.headers()['content-security-policy'], p).toBe(CONTENT_SECURITY_POLICY)
        expect(await page.locator('h1').count(), p).toBe(1)
      }
      // the audit log of the real broker verifies
      await page.goto(`${consoleUrl}/audit`)
      expect(await page.locator('main').textContent()).toMatch(/verified|chained, not yet signed/)
      expect(await page.locator('main').textContent()).toContain('token.exchanged')
    }, 60_000)

    it('real pending intents, declared over CIBA by an agent process (broker-client, its SVID from the Workload API), approved and denied in the console: the approved one yields its action-bound token, the denied one access_denied', async () => {
      const deployUrl = `${API}deploy`
      const dropUrl = `${API}drop`
      const intents = new Proc(process.execPath, [
        '--import',
        'tsx',
        join(E2E_REPO, 'test', 'helpers', 'intent-agent.ts'),
        JSON.stringify({
          socketPath: agent!.socketPath,
          spiffeId: B,
          issuer,
          caFile: server!.bundlePemPath,
          task: 'console-task',
          action: 'write',
          resources: [deployUrl, dropUrl],
        }),
      ])
      try {
        type Line = { declared?: { resource: string; intentId: string }[]; resource?: string; outcome?: string; scope?: string; details?: unknown }
        const lines = () =>
          intents.out
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l) as Line)
        const declared = await waitFor('the agent to declare its intents', () => lines().find((l) => l.declared)?.declared, {
          timeoutMs: 60_000,
          hint: () => intents.out,
        })
        const deploy = declared.find((d) => d.resource === deployUrl)!
        const drop = declared.find((d) => d.resource === dropUrl)!
        expect(lines().filter((l) => l.outcome)).toEqual([]) // both wait for a human

        await page.goto(`${consoleUrl}/approvals`)
        const main = await page.locator('main').textContent()
        expect(main).toContain(deploy.intentId)
        expect(main).toContain(drop.intentId)
        expect(main).toContain(B)
        const card = (id: string) => page.locator('article', { has: page.locator('code', { hasText: id }) })
        await card(deploy.intentId).getByLabel('Reason').fill('release window, checked')
        await card(deploy.intentId).getByRole('button', { name: 'Approve' }).click()
        await page.waitForURL(`${consoleUrl}/approvals?done=approved`)
        await card(drop.intentId).getByRole('button', { name: 'Deny' }).click()
        await page.waitForURL(`${consoleUrl}/approvals?done=denied`)
        const decided = await page.locator('main').textContent()
        expect(decided).toContain('admin (webauthn)')

        const outcomes = await waitFor(
          'the agent to learn both decisions',
          () => {
            const o = lines().filter((l) => l.outcome)
            return o.length === 2 ? o : undefined
          },
          { timeoutMs: 30_000, hint: () => intents.out },
        )
        expect(outcomes.find((l) => l.resource === deployUrl)).toMatchObject({
          outcome: 'token',
          scope: 'write',
          details: [{ type: 'warrant_intent', actions: ['write'], locations: [deployUrl] }],
        })
        expect(outcomes.find((l) => l.resource === dropUrl)).toMatchObject({ outcome: 'access_denied' })
      } finally {
        await intents.stop()
      }
    }, 90_000)

    it('a POST without the CSRF token is refused and revokes nothing', async () => {
      await page.goto(`${consoleUrl}/instances`)
      expect(await page.locator('main').textContent()).toContain(A)
      const status = await page.evaluate(async (a) => {
        const r = await fetch('/revoke', { method: 'POST', body: new URLSearchParams({ level: 'instance', value: a, reason: 'forged' }) })
        return r.status
      }, A)
      expect(status).toBe(403)
      expect((await tok(['introspect', '--key-file', keyA, '--spiffe-id', B])).json()).toMatchObject({ active: true, sub: A })
    }, 60_000)

    it('revoking an instance from the console: its token is refused at introspection and it gets no new one; the other instance is untouched', async () => {
      await page.goto(`${consoleUrl}/instances`)
      const section = page.locator('section', { has: page.getByRole('heading', { name: A, exact: true }) })
      await section.getByLabel('Reason').first().fill('compromised host (e2e)')
      await section.getByRole('button', { name: 'Revoke this instance' }).click()
      await page.waitForURL(`${consoleUrl}/revocations?done=revoked`)
      const main = await page.locator('main').textContent()
      expect(main).toContain('Revocation recorded.')
      expect(main).toContain(A)
      expect(main).toContain('console admin (webauthn): compromised host (e2e)')

      expect((await tok(['introspect', '--key-file', keyA, '--spiffe-id', B])).json()).toEqual({ active: false })
      const again = await tok(['exchange', '--spiffe-id', A, '--task', 'console-task', '--scope', 'read', '--resource', API, '--key-file', keyA])
      expect(again.code).not.toBe(0)
      expect((await tok(['introspect', '--key-file', keyB, '--spiffe-id', B])).json()).toMatchObject({ active: true, sub: B })
      await page.goto(`${consoleUrl}/instances`)
      const after = await page.locator('main').textContent()
      expect(after).not.toContain(A)
      expect(after).toContain(B)
    }, 90_000)
  })

  describe('against a console in this process (approval queue, sessions)', () => {
    const tmp = tempDir('wci-')
    let server: ConsoleServer | undefined
    let backend: DemoBackend
    let clock = Date.now()
    let bootstrap = ''
    let url = ''
    let context: BrowserContext
    let page: Page

    beforeAll(async () => {
      const ca = await makeCa('console.test')
      const svid = await makeSvid(ca, 'spiffe://console.test/warrant/broker', { dnsNames: ['localhost'] })
      const port = await freePort()
      url = `https://localhost:${port}`
      backend = demoBackend()
      server = await startConsoleServer({
        config: parseConsoleConfig({
          console: { enabled: true, bind_address: `127.0.0.1:${port}`, public_url: url, session_idle: '2m', session_ttl: '10m' },
          baseDir: tmp.dir,
          dataDir: tmp.dir,
        })!,
        backend,
        tls: { current: () => ({ certChainPem: svid.certPem, keyPem: svid.keyPem }) },
        log: nullLogger,
        now: () => clock,
        onBootstrapToken: (t) => (bootstrap = t),
      })
      context = await browser.newContext({ ignoreHTTPSErrors: true })
      page = await context.newPage()
    }, 60_000)

    afterAll(async () => {
      await context?.close()
      await server?.close()
      tmp.cleanup()
    })

    const code = (secret: string) => TOTP.generate({ secret: Secret.fromBase32(secret), period: 30, timestamp: clock })
    let secret = ''

    async function signInTotp(): Promise<void> {
      clock += 30_000
      await page.goto(`${url}/login`)
      await page.getByLabel('Operator').fill('admin')
      await page.getByLabel('Code from your authenticator app').fill(code(secret))
      await page.getByRole('button', { name: 'Sign in', exact: true }).click()
      await page.waitForURL(`${url}/`)
    }

    it('TOTP setup (the secret shown once) and sign-in', async () => {
      await page.goto(`${url}/login`)
      await page.getByLabel('Bootstrap token').fill(bootstrap)
      await page.getByRole('button', { name: 'Continue' }).click()
      await page.waitForURL(`${url}/setup`)
      await page.getByRole('button', { name: 'Show a new TOTP secret' }).click()
      secret = (await page.locator('main code').first().textContent())!.trim()
      expect(secret).toMatch(/^[A-Z2-7]{32}$/)
      await page.getByLabel('First code from the app').fill(code(secret))
      await page.getByRole('button', { name: 'Confirm' }).click()
      await page.waitForURL(`${url}/login?done=totp`)
      await signInTotp()
      expect(await page.locator('header').textContent()).toContain('Signed in as admin (totp)')
      expect(await page.content()).not.toContain(secret)
    }, 60_000)

    it('approve and deny from the approval queue, recorded with the operator and method', async () => {
      await page.goto(`${url}/approvals`)
      const one = page.locator('article', { has: page.locator('code', { hasText: 'int-1' }) })
      await one.getByLabel('Reason').fill('checked with on-call')
      await one.getByRole('button', { name: 'Approve' }).click()
      await page.waitForURL(`${url}/approvals?done=approved`)
      const two = page.locator('article', { has: page.locator('code', { hasText: 'int-2' }) })
      await two.getByRole('button', { name: 'Deny' }).click()
      await page.waitForURL(`${url}/approvals?done=denied`)
      expect(await backend.approvals.get('int-1')).toMatchObject({
        status: 'approved',
        approver: { id: 'admin', method: 'totp' },
        reason: 'checked with on-call',
      })
      expect(await backend.approvals.get('int-2')).toMatchObject({ status: 'denied', approver: { id: 'admin', method: 'totp' } })
      expect(await page.locator('main').textContent()).toContain('No intent is waiting.')
    }, 60_000)

    it('the session ends after its idle time: the next page asks to sign in again', async () => {
      expect((await page.goto(`${url}/instances`))!.url()).toBe(`${url}/instances`)
      clock += 2 * 60_000 + 1
      await page.goto(`${url}/instances`)
      expect(page.url()).toBe(`${url}/login?done=expired`)
      expect(await page.getByRole('status').first().textContent()).toContain('Your session ended')
      await signInTotp()
      expect((await page.goto(`${url}/instances`))!.url()).toBe(`${url}/instances`)
    }, 60_000)
  })
})
