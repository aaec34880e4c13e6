/**
 * Screenshots of every page of the operator console, for reviewers:
 * starts a console in this process with demo data (an in-memory approval
 * queue with pending intents, live instances with a delegation chain, a
 * verified audit log, received signals, an hour of issuance and refusal
 * rates), signs in with TOTP in Debian's Chromium (playwright-core), and
 * writes one PNG per page.
 *
 *   node --import tsx scripts/console-screenshots.ts [out-dir]   (default: console-screenshots/)
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { Secret, TOTP } from 'otpauth'
import { chromium } from 'playwright-core'
import { nullLogger } from '../src/common/log/logger.js'
import { parseConsoleConfig } from '../src/console/config.js'
import { startConsoleServer } from '../src/console/console-server.js'
import { makeCa, makeSvid } from '../test/helpers/broker-http-fixtures.js'
import { demoBackend } from '../test/unit/console/demo-backend.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

async function main(): Promise<void> {
  const out = resolve(process.argv[2] ?? 'console-screenshots')
  mkdirSync(out, { recursive: true })
  const data = mkdtempSync(join(tmpdir(), 'wcshot-'))
  const ca = await makeCa('demo.example')
  const svid = await makeSvid(ca, 'spiffe://demo.example/warrant/broker', { dnsNames: ['localhost'] })
  const port = await freePort()
  const url = `https://localhost:${port}`
  let bootstrap = ''
  const server = await startConsoleServer({
    config: parseConsoleConfig({ console: { enabled: true, bind_address: `127.0.0.1:${port}`, public_url: url }, baseDir: data, dataDir: data })!,
    backend: demoBackend(),
    tls: { current: () => ({ certChainPem: svid.certPem, keyPem: svid.keyPem }) },
    log: nullLogger,
    onBootstrapToken: (t) => (bootstrap = t),
  })
  const browser = await chromium.launch({
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
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } })
    const page = await context.newPage()
    const shot = async (name: string) => {
      const file = join(out, `${name}.png`)
      await page.screenshot({ path: file, fullPage: true })
      process.stdout.write(`${file}\n`)
    }
    await page.goto(`${url}/login`)
    await shot('01-login')
    await page.getByLabel('Bootstrap token').fill(bootstrap)
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.waitForURL(`${url}/setup`)
    await shot('02-setup')
    await page.getByRole('button', { name: 'Show a new TOTP secret' }).click()
    const secret = (await page.locator('main code').first().textContent())!.trim()
    const code = () => TOTP.generate({ secret: Secret.fromBase32(secret), period: 30 })
    await page.getByLabel('First code from the app').fill(code())
    await page.getByRole('button', { name: 'Confirm' }).click()
    await page.waitForURL(`${url}/login?done=totp`)
    // a code is accepted once: wait for the next time step
    await new Promise((r) => setTimeout(r, (30 - (Math.floor(Date.now() / 1000) % 30) + 1) * 1000))
    await page.getByLabel('Operator').fill('admin')
    await page.getByLabel('Code from your authenticator app').fill(code())
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await page.waitForURL(`${url}/`)
    const pages: [string, string][] = [
      ['03-overview', '/'],
      ['04-approvals', '/approvals'],
      ['05-instances', '/instances'],
      ['06-revocations', '/revocations'],
      ['07-audit', '/audit'],
      ['08-signals', '/signals'],
    ]
    for (const [name, path] of pages) {
      await page.goto(`${url}${path}`)
      await shot(name)
    }
  } finally {
    await browser.close()
    await server.close()
    rmSync(data, { recursive: true, force: true })
  }
}

await main()
