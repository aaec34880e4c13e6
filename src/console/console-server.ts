/**
 * The operator console: Fastify on its own node:https listener (TLS 1.2+,
 * the broker's certificate or its own, rotated with `setSecureContext`).
 *
 * Security properties, each enforced in one place here:
 * - every response carries a strict Content-Security-Policy (`default-src
 *   'self'`, scripts and styles only from /static, no inline anything,
 *   `frame-ancestors 'none'`), X-Frame-Options DENY, nosniff, a same-origin
 *   referrer policy (`no-referrer` would make Chromium send `Origin: null`),
 *   HSTS and `Cache-Control: no-store`;
 * - the session cookie (`__Host-warrant-console`) is HttpOnly, Secure,
 *   SameSite=Strict, Path=/, and carries only a random id; the session lives
 *   server side with idle and absolute expiry, and every login makes a new one;
 * - every POST needs a live session and its CSRF token (`_csrf` field or
 *   `X-CSRF-Token` header), and a present `Origin` must be the console's;
 * - logins fail with one generic answer, are logged with the reason, and are
 *   rate-limited per client address and per operator;
 * - pages are rendered through `html` (escaped by construction) and never
 *   show a token, key or TOTP secret (a new TOTP secret is shown once, in
 *   the answer to the POST that created it).
 */
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import fastifyCookie from '@fastify/cookie'
import fastifyFormbody from '@fastify/formbody'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError, isIdentityError } from '../errors/identity-error.js'
import { CONSOLE_CSS, CONSOLE_JS } from './browser-script.js'
import type { ConsoleConfig } from './config.js'
import type { Html } from './html.js'
import { OperatorAuth, OperatorAuthError } from './operator-auth.js'
import { OperatorStore } from './operator-store.js'
import {
  approvalPage,
  approvalsPage,
  auditPage,
  errorPage,
  instancesPage,
  loginPage,
  overviewPage,
  revocationsPage,
  setupPage,
  signalsPage,
  type PageContext,
} from './pages.js'
import { REVOCATION_LEVELS, type ConsoleBackend, type OperatorIdentity, type RevocationLevel, type SecretSealer } from './ports.js'
import { csrfMatches, LoginLimiter, SessionStore, type Session } from './sessions.js'

export const SESSION_COOKIE = '__Host-warrant-console'

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

export interface ConsoleTls {
  current(): { certChainPem: string; keyPem: string }
  onChange?(fn: () => void): () => void
}

export interface ConsoleServerOptions {
  config: ConsoleConfig
  backend: ConsoleBackend
  tls: ConsoleTls
  log: Logger
  /** Milliseconds since the epoch (sessions, challenges, TOTP). Default Date.now. */
  now?: () => number
  /** Receives the one-time bootstrap token when the bootstrap operator has no credential (the CLI prints it). */
  onBootstrapToken?: (token: string, loginUrl: string) => void
  /** Seals TOTP secrets set up in the console (the broker's key manager); without it they are stored unsealed (0600 file). */
  sealer?: SecretSealer
}

export interface ConsoleServer {
  readonly url: string
  readonly port: number
  readonly app: FastifyInstance
  close(): Promise<void>
}

/** Fixed texts for `?done=` and `?error=` (never echoing the query). */
const NOTICES: Record<string, string> = {
  approved: 'Intent approved.',
  denied: 'Intent denied.',
  revoked: 'Revocation recorded.',
  logout: 'Signed out.',
  passkey: 'Passkey registered: sign in with it.',
  totp: 'TOTP set up: sign in with a code.',
  expired: 'Your session ended: sign in again.',
}
const ERRORS: Record<string, string> = {
  login: 'Sign-in failed.',
  limited: 'Too many failed sign-ins: try again later.',
  decision: 'The decision was not recorded (the intent is unknown or no longer pending).',
  revoke: 'The revocation was refused: check the level and the value.',
  code: 'The code was not accepted.',
}

type Req = FastifyRequest & { session?: Session }

export async function startConsoleServer(o: ConsoleServerOptions): Promise<ConsoleServer> {
  const cfg = o.config
  const now = o.now ?? Date.now
  const log = o.log.child({ [F.SUBSYSTEM]: 'console' })
  const store = OperatorStore.open(cfg.storePath)
  const auth = new OperatorAuth(cfg, store, now, o.sealer)
  const sessions = new SessionStore({ idleMs: cfg.sessionIdleMs, ttlMs: cfg.sessionTtlMs, now })
  const limiter = new LoginLimiter({ limit: cfg.loginAttempts, windowMs: cfg.loginWindowMs, now })
  const tlsOptions = () => {
    const id = o.tls.current()
    return { cert: id.certChainPem, key: id.keyPem, minVersion: 'TLSv1.2' as const }
  }
  let server: https.Server | undefined
  const app = Fastify({
    serverFactory: (handler) => {
      server = https.createServer({ ...tlsOptions(), handshakeTimeout: 5_000, maxHeaderSize: 16 * 1024 }, handler)
      server.headersTimeout = 10_000
      server.requestTimeout = 15_000
      server.keepAliveTimeout = 30_000
      return server
    },
    bodyLimit: 64 * 1024,
    logger: false,
    forceCloseConnections: true,
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
  })
  const unsubTls = o.tls.onChange?.(() => server?.setSecureContext(tlsOptions()))
  await app.register(fastifyCookie)
  await app.register(fastifyFormbody, { bodyLimit: 64 * 1024 })

  const setCookie = (reply: FastifyReply, s: Session) => reply.setCookie(SESSION_COOKIE, s.id, { httpOnly: true, secure: true, sameSite: 'strict', path: '/' })
  const clearCookie = (reply: FastifyReply) =>
    reply.setCookie(SESSION_COOKIE, '', { httpOnly: true, secure: true, sameSite: 'strict', path: '/', maxAge: 0, expires: new Date(0) })
  const peer = (req: FastifyRequest) => ({ [F.PEER]: req.ip, user_agent: String(req.headers['user-agent'] ?? '').slice(0, 200) })

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('Content-Security-Policy', CONTENT_SECURITY_POLICY)
    reply.header('X-Frame-Options', 'DENY')
    reply.header('X-Content-Type-Options', 'nosniff')
    reply.header('Referrer-Policy', 'same-origin')
    reply.header('Strict-Transport-Security', 'max-age=31536000')
    reply.header('Cross-Origin-Opener-Policy', 'same-origin')
    reply.header('Cross-Origin-Resource-Policy', 'same-origin')
    reply.header('Permissions-Policy', 'camera=(), microphone=(), geolocation=(), publickey-credentials-get=(self), publickey-credentials-create=(self)')
    if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store')
    return payload
  })

  // Session lookup and the CSRF check of every POST, before any handler.
  app.addHook('preHandler', async (req: Req, reply) => {
    const s = sessions.get(req.cookies[SESSION_COOKIE])
    if (s) req.session = s
    if (req.method !== 'POST') return
    const origin = req.headers.origin
    const body = req.body as Record<string, unknown> | undefined
    const presented = req.headers['x-csrf-token'] ?? (body && typeof body === 'object' ? body._csrf : undefined)
    if ((origin !== undefined && origin !== cfg.origin) || !s || !csrfMatches(s, presented)) {
      log.warn(
        {
          ...peer(req),
          path: req.url,
          [F.ERROR_CODE]: 'ERR_CSRF',
          [F.REASON]: !s ? 'no session' : origin !== undefined && origin !== cfg.origin ? `origin ${origin}` : 'csrf token',
        },
        'Console request refused',
      )
      const wantsJson = String(req.headers['content-type'] ?? '').startsWith('application/json')
      if (wantsJson) return reply.code(403).send({ error: 'forbidden' })
      return sendPage(
        reply.code(403),
        errorPage(anonymousCtx(req, s), 403, 'This form expired or did not come from this console. Reload the page and try again.'),
      )
    }
  })

  const anonymousCtx = (req: FastifyRequest, s: Session | undefined, notice?: PageContext['notice']): PageContext => ({
    csrf: s?.csrf ?? '',
    path: req.url.split('?')[0]!,
    ...(s?.kind === 'operator' ? { operator: s.operator!, method: s.method! } : {}),
    ...(notice ? { notice } : {}),
  })
  const noticeOf = (req: FastifyRequest): PageContext['notice'] => {
    const q = req.query as { done?: unknown; error?: unknown }
    if (typeof q.error === 'string' && ERRORS[q.error]) return { text: ERRORS[q.error]!, error: true }
    if (typeof q.done === 'string' && NOTICES[q.done]) return { text: NOTICES[q.done]! }
    return undefined
  }
  const sendPage = (reply: FastifyReply, page: Html) => reply.type('text/html; charset=utf-8').send(page.toString())

  /** The session for an anonymous page: the current one, or a new pre-login one (cookie set). */
  const preSession = (req: Req, reply: FastifyReply): Session => {
    if (req.session && req.session.kind === 'pre') return req.session
    const s = sessions.create('pre')
    setCookie(reply, s)
    return s
  }

  /** The operator's session, or undefined after redirecting to the login page. */
  const operatorOf = (req: Req, reply: FastifyReply): (Session & { operator: string; method: 'webauthn' | 'totp' }) | undefined => {
    const s = req.session
    if (s?.kind === 'operator' && s.operator !== undefined && (s.method === 'webauthn' || s.method === 'totp'))
      return s as Session & { operator: string; method: 'webauthn' | 'totp' }
    // a cookie the server no longer knows: the session ended (idle, lifetime, restart)
    void reply.redirect(!s && req.cookies[SESSION_COOKIE] ? '/login?done=expired' : '/login', 303)
    return undefined
  }
  const identity = (s: { operator: string; method: 'webauthn' | 'totp' }): OperatorIdentity => ({ id: s.operator, method: s.method })

  const loginSession = (reply: FastifyReply, old: Session | undefined, operator: string, method: 'webauthn' | 'totp' | 'bootstrap'): Session => {
    if (old) sessions.destroy(old.id)
    const s = sessions.create(method === 'bootstrap' ? 'setup' : 'operator', { operator, method })
    setCookie(reply, s)
    return s
  }

  const refuseLogin = (req: FastifyRequest, keys: string[], err: unknown, what: string) => {
    limiter.fail(keys)
    const reason = err instanceof OperatorAuthError ? err.reason : err instanceof Error ? err.message : String(err)
    log.warn({ ...peer(req), [F.METHOD]: what, [F.ERROR_CODE]: 'ERR_OPERATOR_AUTH_FAILED', [F.REASON]: reason }, 'Console sign-in failed')
    if (!(err instanceof OperatorAuthError) && !isIdentityError(err)) log.error({ [F.ERR]: reason }, 'Console sign-in error')
  }

  // static files (the only script and stylesheet)
  app.get('/static/console.js', async (_req, reply) => reply.header('Cache-Control', 'no-cache').type('text/javascript; charset=utf-8').send(CONSOLE_JS))
  app.get('/static/console.css', async (_req, reply) => reply.header('Cache-Control', 'no-cache').type('text/css; charset=utf-8').send(CONSOLE_CSS))

  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send())

  // sign-in
  app.get('/login', async (req: Req, reply) => {
    if (req.session?.kind === 'operator') return reply.redirect('/', 303)
    const s = preSession(req, reply)
    return sendPage(reply, loginPage({ ...anonymousCtx(req, s, noticeOf(req)) }, { bootstrapOpen: auth.bootstrapOutstanding() }))
  })

  app.post('/login/webauthn/options', async (req: Req, reply) => {
    const s = req.session!
    if (s.kind !== 'pre') return reply.code(400).send({ error: 'already signed in' })
    if (limiter.blocked([`ip:${req.ip}`])) return reply.code(429).send({ error: 'too many attempts' })
    const opts = await auth.loginOptions()
    s.challenge = { value: opts.challenge, purpose: 'login', at: now() }
    return reply.send(opts)
  })

  app.post('/login/webauthn', async (req: Req, reply) => {
    const s = req.session!
    const keys = [`ip:${req.ip}`]
    if (limiter.blocked(keys)) return reply.code(429).send({ error: 'too many attempts' })
    const challenge = s.challenge
    delete s.challenge
    try {
      const operator = await auth.login(req.body, challenge)
      limiter.succeed(keys)
      loginSession(reply, s, operator, 'webauthn')
      log.info({ ...peer(req), operator, [F.METHOD]: 'webauthn' }, 'Operator signed in')
      return reply.send({ redirect: '/' })
    } catch (err) {
      refuseLogin(req, keys, err, 'webauthn')
      return reply.code(401).send({ error: 'login failed' })
    }
  })

  app.post('/login/totp', async (req: Req, reply) => {
    const s = req.session!
    const b = req.body as { operator?: unknown; code?: unknown }
    const name = typeof b.operator === 'string' ? b.operator.trim().slice(0, 64) : ''
    const keys = [`ip:${req.ip}`, `op:${name}`]
    if (limiter.blocked(keys)) {
      log.warn({ ...peer(req), operator: name, [F.METHOD]: 'totp', [F.REASON]: 'rate limited' }, 'Console sign-in refused')
      return reply.redirect('/login?error=limited', 303)
    }
    try {
      const operator = await auth.loginTotp(name, b.code)
      limiter.succeed(keys)
      loginSession(reply, s, operator, 'totp')
      log.info({ ...peer(req), operator, [F.METHOD]: 'totp' }, 'Operator signed in')
      return reply.redirect('/', 303)
    } catch (err) {
      refuseLogin(req, keys, err, 'totp')
      return reply.redirect('/login?error=login', 303)
    }
  })

  app.post('/bootstrap', async (req: Req, reply) => {
    const s = req.session!
    const keys = [`ip:${req.ip}`]
    if (limiter.blocked(keys)) return reply.redirect('/login?error=limited', 303)
    try {
      const operator = auth.useBootstrapToken((req.body as { token?: unknown }).token)
      limiter.succeed(keys)
      loginSession(reply, s, operator, 'bootstrap')
      log.info({ ...peer(req), operator, [F.METHOD]: 'bootstrap' }, 'Console bootstrap token used: credential setup')
      return reply.redirect('/setup', 303)
    } catch (err) {
      refuseLogin(req, keys, err, 'bootstrap')
      return reply.redirect('/login?error=login', 303)
    }
  })

  app.post('/logout', async (req: Req, reply) => {
    const s = req.session!
    sessions.destroy(s.id)
    clearCookie(reply)
    if (s.operator) log.info({ ...peer(req), operator: s.operator }, 'Operator signed out')
    return reply.redirect('/login?done=logout', 303)
  })

  // credential setup (bootstrap session only)
  const setupOf = (req: Req, reply: FastifyReply): (Session & { operator: string }) | undefined => {
    const s = req.session
    if (s?.kind === 'setup' && s.operator !== undefined) return s as Session & { operator: string }
    void reply.redirect('/login', 303)
    return undefined
  }
  app.get('/setup', async (req: Req, reply) => {
    const s = setupOf(req, reply)
    if (!s) return reply
    return sendPage(reply, setupPage(anonymousCtx(req, s, noticeOf(req)), { operator: s.operator }))
  })
  app.post('/setup/totp', async (req: Req, reply) => {
    const s = setupOf(req, reply)
    if (!s) return reply
    const secret = auth.newTotpSecret()
    s.pendingTotp = secret
    return sendPage(reply, setupPage(anonymousCtx(req, s), { operator: s.operator, totp: { secret, uri: auth.totpUri(s.operator, secret) } }))
  })
  app.post('/setup/totp/confirm', async (req: Req, reply) => {
    const s = setupOf(req, reply)
    if (!s) return reply
    try {
      if (s.pendingTotp === undefined) throw new OperatorAuthError('no TOTP secret offered in this session')
      await auth.confirmTotp(s.operator, s.pendingTotp, (req.body as { code?: unknown }).code)
    } catch (err) {
      refuseLogin(req, [`ip:${req.ip}`], err, 'totp-setup')
      return reply.redirect('/setup?error=code', 303)
    }
    sessions.destroy(s.id)
    clearCookie(reply)
    log.info({ ...peer(req), operator: s.operator, [F.METHOD]: 'totp' }, 'Operator credential registered')
    return reply.redirect('/login?done=totp', 303)
  })
  app.post('/setup/webauthn/options', async (req: Req, reply) => {
    const s = req.session
    if (s?.kind !== 'setup' || s.operator === undefined) return reply.code(403).send({ error: 'forbidden' })
    const opts = await auth.registrationOptions(s.operator)
    s.challenge = { value: opts.challenge, purpose: 'register', at: now() }
    return reply.send(opts)
  })
  app.post('/setup/webauthn', async (req: Req, reply) => {
    const s = req.session
    if (s?.kind !== 'setup' || s.operator === undefined) return reply.code(403).send({ error: 'forbidden' })
    const challenge = s.challenge
    delete s.challenge
    try {
      await auth.register(s.operator, req.body, challenge)
    } catch (err) {
      refuseLogin(req, [`ip:${req.ip}`], err, 'webauthn-register')
      return reply.code(400).send({ error: 'registration failed' })
    }
    sessions.destroy(s.id)
    clearCookie(reply)
    log.info({ ...peer(req), operator: s.operator, [F.METHOD]: 'webauthn' }, 'Operator credential registered')
    return reply.send({ redirect: '/login?done=passkey' })
  })

  // pages
  const ctxOf = (req: Req, s: Session): PageContext => anonymousCtx(req, s, noticeOf(req))
  const b = o.backend

  app.get('/', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    const [pending, instances, audit] = await Promise.all([
      b.approvals ? b.approvals.list({ status: 'pending' }).then((l) => l.length) : Promise.resolve(undefined),
      b.instances(),
      b.audit ? b.audit.status() : Promise.resolve(undefined),
    ])
    return sendPage(reply, overviewPage(ctxOf(req, s), { rates: b.rates(), pending, instances: instances.length, ...(audit ? { audit } : {}) }))
  })

  app.get('/approvals', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    if (!b.approvals) return sendPage(reply, approvalsPage(ctxOf(req, s), { configured: false, pending: [], recent: [] }))
    const [pending, all] = await Promise.all([b.approvals.list({ status: 'pending', limit: 100 }), b.approvals.list({ limit: 200 })])
    const recent = all
      .filter((a) => a.status !== 'pending')
      .sort((x, y) => y.createdAt - x.createdAt)
      .slice(0, 50)
    return sendPage(reply, approvalsPage(ctxOf(req, s), { configured: true, pending, recent }))
  })

  app.get('/approvals/:id', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    if (!b.approvals) return sendPage(reply, approvalsPage(ctxOf(req, s), { configured: false, pending: [], recent: [] }))
    const param = (req.params as { id?: unknown }).id
    const v = typeof param === 'string' && param.length <= 256 ? await b.approvals.get(param) : undefined
    return sendPage(reply.code(v ? 200 : 404), approvalPage(ctxOf(req, s), v))
  })

  app.post('/approvals/:id/decide', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    const param = (req.params as { id?: unknown }).id
    const id = typeof param === 'string' ? param : ''
    const body = req.body as { decision?: unknown; reason?: unknown }
    const reason = typeof body.reason === 'string' && body.reason.trim() !== '' ? body.reason.trim().slice(0, 500) : undefined
    if (!b.approvals || (body.decision !== 'approve' && body.decision !== 'deny')) return reply.redirect('/approvals?error=decision', 303)
    try {
      const v = body.decision === 'approve' ? await b.approvals.approve(id, identity(s), reason) : await b.approvals.deny(id, identity(s), reason)
      log.info(
        { ...peer(req), operator: s.operator, [F.METHOD]: s.method, intent: id, decision: body.decision, status: v.status },
        'Intent decided in the console',
      )
      return reply.redirect(`/approvals?done=${body.decision === 'approve' ? 'approved' : 'denied'}`, 303)
    } catch (err) {
      log.warn(
        { ...peer(req), operator: s.operator, intent: id, [F.ERROR_CODE]: isIdentityError(err) ? err.code : 'internal', [F.ERR]: String(err) },
        'Console decision refused',
      )
      return reply.redirect('/approvals?error=decision', 303)
    }
  })

  app.get('/instances', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    return sendPage(reply, instancesPage(ctxOf(req, s), { instances: await b.instances() }))
  })

  app.get('/revocations', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    return sendPage(reply, revocationsPage(ctxOf(req, s), { revocations: await b.revocations() }))
  })

  app.post('/revoke', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    const body = req.body as { level?: unknown; value?: unknown; reason?: unknown }
    const level = body.level as RevocationLevel
    const value = typeof body.value === 'string' ? body.value.trim() : ''
    const reason = typeof body.reason === 'string' ? body.reason.trim().slice(0, 400) : ''
    if (!REVOCATION_LEVELS.includes(level) || value === '' || reason === '') return reply.redirect('/revocations?error=revoke', 303)
    try {
      const r = await b.revoke({ level, value, reason }, identity(s))
      log.warn({ ...peer(req), operator: s.operator, [F.METHOD]: s.method, level, value, seq: r.seq, tokens: r.tokens }, 'Revocation from the console')
      return reply.redirect('/revocations?done=revoked', 303)
    } catch (err) {
      log.warn(
        { ...peer(req), operator: s.operator, level, [F.ERROR_CODE]: isIdentityError(err) ? err.code : 'internal', [F.ERR]: String(err) },
        'Console revocation refused',
      )
      return reply.redirect('/revocations?error=revoke', 303)
    }
  })

  app.get('/audit', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    if (!b.audit) return sendPage(reply, auditPage(ctxOf(req, s), { configured: false, entries: [] }))
    const [status, entries] = await Promise.all([b.audit.status(), b.audit.recent(100)])
    return sendPage(reply, auditPage(ctxOf(req, s), { configured: true, status, entries }))
  })

  app.get('/signals', async (req: Req, reply) => {
    const s = operatorOf(req, reply)
    if (!s) return reply
    return sendPage(reply, signalsPage(ctxOf(req, s), { configured: b.signals !== undefined, signals: b.signals ? await b.signals.received(200) : [] }))
  })

  app.setNotFoundHandler(async (req: Req, reply) => sendPage(reply.code(404), errorPage(anonymousCtx(req, req.session), 404, 'No such page.')))
  app.setErrorHandler(async (err, req: Req, reply) => {
    const status = (err as { statusCode?: number }).statusCode
    if (status !== undefined && status >= 400 && status < 500)
      return sendPage(reply.code(status), errorPage(anonymousCtx(req, req.session), status, 'Bad request.'))
    log.error({ path: req.url.split('?')[0], [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Console request failed')
    return sendPage(reply.code(500), errorPage(anonymousCtx(req, req.session), 500, 'Internal error.'))
  })

  try {
    await app.listen({ host: cfg.bindAddress.host, port: cfg.bindAddress.port })
  } catch (err) {
    unsubTls?.()
    await app.close().catch(() => undefined)
    store.close()
    throw new IdentityError('ERR_CONFIG_INVALID', `console cannot listen on ${cfg.bindAddress.host}:${cfg.bindAddress.port}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const port = (app.server.address() as AddressInfo).port
  const url = cfg.origin
  const sweep = setInterval(() => sessions.sweep(), 60_000)
  sweep.unref()
  log.info({ [F.ADDRESS]: `${cfg.bindAddress.host}:${port}`, url, operators: cfg.operators.map((x) => x.name) }, 'Operator console listening')
  const token = auth.issueBootstrapToken()
  if (token !== undefined) {
    log.info({ operator: cfg.bootstrapOperator }, 'Console bootstrap token issued (printed on standard output, once)')
    o.onBootstrapToken?.(token, `${url}/login`)
  }
  return {
    url,
    port,
    app,
    async close() {
      clearInterval(sweep)
      unsubTls?.()
      await app.close()
      store.close()
    },
  }
}
