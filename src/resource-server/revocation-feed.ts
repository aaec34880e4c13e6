/**
 * A verifier's subscription to the broker's revocation feed: one HTTPS
 * connection (mutual TLS with the verifier's SVID, read fresh at every
 * connect so rotation needs nothing) carrying Server-Sent Events. Entries
 * go into a RevocationSet that the request verifier consults on every
 * request (`ResourceServerOptions.revocations`), so a token is refused from
 * the moment its entry arrives. On any break it reconnects with backoff and
 * resumes from the last seq it holds (`Last-Event-ID`), so it misses nothing.
 */
import https from 'node:https'
import type { IncomingMessage } from 'node:http'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { parseRevocationEntry, RevocationSet, type RevocableClaims, type RevocationEntry } from '../tokens/revocation.js'

export interface RevocationFeedOptions {
  /** The broker's feed endpoint (metadata `warrant_revocation_feed_endpoint`); https only. */
  url: string
  /** The verifier's credentials, read at every (re)connect: the CA bundle for the broker and its own X.509-SVID. */
  tls: () => { ca: string | Buffer; cert?: string | Buffer; key?: string | Buffer }
  /** Extra headers (for example `authorization` with a JWT-SVID instead of a client certificate). */
  headers?: () => Record<string, string>
  log?: Logger
  nowSec?: () => number
  /** Reconnect backoff, ms: doubling from min to max. Default 250 .. 10000. */
  backoffMs?: { min: number; max: number }
  /** Called with each new entry, after it is applied. */
  onEntry?: (e: RevocationEntry) => void
}

/** Largest single event accepted; a longer one means a broken or hostile peer. */
const MAX_EVENT_BYTES = 8 * 1024 * 1024

export class RevocationFeed {
  readonly set = new RevocationSet()
  /** Resolves when the first connection has delivered the backlog (`synced`). */
  readonly synced: Promise<void>
  #resolveSynced!: () => void
  readonly #o: RevocationFeedOptions
  readonly #log: Logger
  #req: ReturnType<typeof https.request> | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false
  #backoff: number
  #connected = false
  readonly #sweep: NodeJS.Timeout

  constructor(o: RevocationFeedOptions) {
    if (new URL(o.url).protocol !== 'https:') throw new TypeError('the revocation feed URL must be https')
    this.#o = o
    this.#log = (o.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'revocation-feed' })
    this.#backoff = o.backoffMs?.min ?? 250
    this.synced = new Promise((r) => (this.#resolveSynced = r))
    this.#sweep = setInterval(() => this.set.sweep(this.#now()), 60_000)
    this.#sweep.unref()
    this.#connect()
  }

  /** Whether the feed is connected and has delivered its backlog. */
  get connected(): boolean {
    return this.#connected
  }

  /** The entry covering a verified token, if any (what ResourceServerOptions.revocations calls). */
  covering(c: RevocableClaims, nowSec: number): RevocationEntry | undefined {
    return this.set.covering(c, nowSec)
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#sweep)
    clearTimeout(this.#timer)
    this.#req?.destroy()
  }

  #now(): number {
    return this.#o.nowSec?.() ?? Math.floor(Date.now() / 1000)
  }

  #connect(): void {
    if (this.#closed) return
    let tls
    try {
      tls = this.#o.tls()
    } catch (err) {
      this.#log.warn({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Revocation feed credentials unavailable; retrying')
      this.#retry()
      return
    }
    const headers: Record<string, string> = { accept: 'text/event-stream', ...(this.#o.headers?.() ?? {}) }
    if (this.set.lastSeq > 0) headers['last-event-id'] = String(this.set.lastSeq)
    const req = https.request(this.#o.url, { method: 'GET', headers, agent: false, ...tls })
    this.#req = req
    req.on('response', (res) => this.#read(res))
    req.on('error', (err) => {
      this.#connected = false
      if (!this.#closed) this.#log.info({ [F.ERR]: err.message }, 'Revocation feed connection failed')
      this.#retry()
    })
    req.end()
  }

  #retry(): void {
    if (this.#closed || this.#timer !== undefined) return
    const wait = this.#backoff
    this.#backoff = Math.min(this.#backoff * 2, this.#o.backoffMs?.max ?? 10_000)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#connect()
    }, wait)
    this.#timer.unref()
  }

  #read(res: IncomingMessage): void {
    const type = String(res.headers['content-type'] ?? '')
    if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
      this.#log.warn({ status: res.statusCode, content_type: type.slice(0, 64) }, 'Revocation feed refused the subscription')
      res.resume()
      res.on('end', () => this.#retry())
      return
    }
    res.setEncoding('utf8')
    let buf = ''
    res.on('data', (chunk: string) => {
      buf += chunk
      let i: number
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i)
        buf = buf.slice(i + 2)
        this.#event(block)
      }
      if (buf.length > MAX_EVENT_BYTES) {
        this.#log.warn({ bytes: buf.length }, 'Revocation feed event too large; reconnecting')
        res.destroy()
      }
    })
    res.on('close', () => {
      this.#connected = false
      if (!this.#closed) this.#log.info({ seq: this.set.lastSeq }, 'Revocation feed closed; reconnecting')
      this.#retry()
    })
  }

  #event(block: string): void {
    let event = 'message'
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith(':') || line.length === 0) continue
      const c = line.indexOf(':')
      const field = c < 0 ? line : line.slice(0, c)
      const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '')
      if (field === 'event') event = value
      else if (field === 'data') data.push(value)
    }
    if (event === 'synced') {
      this.#connected = true
      this.#backoff = this.#o.backoffMs?.min ?? 250
      this.#resolveSynced()
      return
    }
    if (event !== 'revocation') return
    let e: RevocationEntry
    try {
      e = parseRevocationEntry(JSON.parse(data.join('\n')))
    } catch (err) {
      // An entry this verifier cannot read: reconnecting replays it, which fails again; stop here and say so loudly.
      this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Revocation feed sent an unreadable entry')
      return
    }
    this.set.apply(e)
    this.#o.onEntry?.(e)
  }
}

/** Subscribes to the broker's revocation feed; pass the result as `ResourceServerOptions.revocations`. */
export function subscribeRevocations(o: RevocationFeedOptions): RevocationFeed {
  return new RevocationFeed(o)
}
