import { X509Certificate, createHash, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { IdentityError } from '../../errors/identity-error.js'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { KeyManager, KeyType, ManagedKey } from '../../keymanager/key-manager.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { mintJwtSvid } from '../../spiffe/jwt-svid/mint-jwt-svid.js'
import type { Signer } from '../../spiffe/signer.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid, type SubjectPublicKey, type X509Subject } from '../../spiffe/x509-svid/certificate-builder.js'
import { readTlv } from '../../spiffe/x509-svid/der.js'
import type { ChangeFeedEvent, DataStore } from '../datastore/types.js'
import { AUTHORITIES_NAMESPACE, DEFAULT_SERVER_KEY, putAuthorities, unionOfAuthorities, type ServerAuthorities } from './shared-bundle.js'

/** An upstream CA: our X.509 CA certificates become intermediates it signs. */
export interface UpstreamAuthority {
  certificate: Uint8Array
  signer: Signer
  /** Roots published in our bundle (default: the upstream certificate itself). */
  roots: Uint8Array[]
  /** Certificates between the upstream and its roots, sent in SVID chains. */
  intermediates: Uint8Array[]
}

export interface CaManagerOptions {
  trustDomain: TrustDomain
  keyManager: KeyManager
  ds: DataStore
  clock: Clock
  log: Logger
  caTtlMs: number
  caKeyType: KeyType
  jwtKeyType: KeyType
  caSubject?: X509Subject
  jwtIssuer?: string
  refreshHintSeconds: number
  upstream?: UpstreamAuthority
  /**
   * This server's ID among the servers sharing the datastore (server/ca/server-id.ts): its journal is
   * `ca/<id>`, its keys `<id>.x509-ca-<n>` and `<id>.jwt-<n>` (no clash in a shared HSM), and its
   * authorities are published under it (shared-bundle.ts). Absent: the single-server names (`ca`, `x509-ca-<n>`).
   */
  serverId?: string
}

type SlotStatus = 'prepared' | 'active' | 'old'

interface X509Slot {
  keyId: string
  cert: string // base64 DER
  notBefore: number
  notAfter: number
  status: SlotStatus
}

interface JwtSlot {
  keyId: string
  kid: string
  jwk: JsonWebKey
  notBefore: number
  notAfter: number
  status: SlotStatus
}

interface Journal {
  version: 1
  counter: number
  x509: X509Slot[]
  jwt: JwtSlot[]
  /** Set on the single-server journal `ca` once a server adopted it under its own name (it is then never adopted again). */
  movedTo?: string
}

interface ActiveX509 {
  slot: X509Slot
  der: Uint8Array
  key: ManagedKey
  /** Certificates after the leaf in an SVID chain: for an upstream CA, our intermediate and the upstream's. */
  chainTail: Uint8Array[]
  /** Made on first use by x509Delegate(); null when the key stays in its key manager. */
  delegate?: X509CaDelegate | null
}

/** The active X.509 CA as worker threads can sign with it (see CaManager.x509Delegate). */
export interface X509CaDelegate {
  /** The CA certificate (DER): the issuer of the leaves. */
  readonly certificate: Uint8Array
  /** Certificates after the leaf in an SVID chain. */
  readonly chainTail: readonly Uint8Array[]
  /** The CA's private key, in this process (software key managers only). */
  readonly privateKey: KeyObject
  /** notBefore and notAfter (ms since the epoch) for a leaf of `ttlMs`: never past the CA's own notAfter. */
  validity(ttlMs: number): { notBefore: number; notAfter: number }
}

interface ActiveJwt {
  slot: JwtSlot
  key: ManagedKey
}

/** The journal of a server without an ID (one server per datastore), and the one a server with an ID adopts on upgrade. */
const LEGACY_JOURNAL_NAME = 'ca'

/**
 * The server CA and its key rotation, modelled on SPIRE's ca/manager: each of
 * the X.509 CA and the JWT key has slots; the next key is prepared (and
 * published in the bundle) at half of the active one's life, activated at five
 * sixths, and a retired key stays in the bundle until it expires. Keys live in
 * the KeyManager; the CA only ever holds a Signer. Every bundle change bumps
 * `spiffe_sequence`.
 *
 * Several servers on one datastore each run their own CaManager (their own
 * keys and journal, `serverId`); the bundle is the union of every server's
 * authorities (shared-bundle.ts), read again at each rotation check, so
 * another server's new key reaches this server's agents and TLS trust within
 * one `rotation_check_interval`, long before that key signs anything.
 */
export class CaManager {
  readonly #o: CaManagerOptions
  readonly #log: Logger
  readonly #events = new EventEmitter()
  #journal: Journal = { version: 1, counter: 0, x509: [], jwt: [] }
  #x509: ActiveX509 | undefined
  #jwt: ActiveJwt | undefined
  #bundle: SpiffeBundle | undefined
  #busy: Promise<unknown> = Promise.resolve()
  readonly #journalName: string
  readonly #serverKey: string
  readonly #keyPrefix: string

  constructor(opts: CaManagerOptions) {
    if (opts.caTtlMs < 60_000) throw new RangeError('ca_ttl must be at least 1m')
    if (opts.serverId !== undefined && !/^[a-z0-9][a-z0-9-]{0,31}$/.test(opts.serverId)) throw new RangeError('server id must match [a-z0-9][a-z0-9-]{0,31}')
    this.#o = opts
    this.#journalName = opts.serverId === undefined ? LEGACY_JOURNAL_NAME : `ca/${opts.serverId}`
    this.#serverKey = opts.serverId ?? DEFAULT_SERVER_KEY
    this.#keyPrefix = opts.serverId === undefined ? '' : `${opts.serverId}.`
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'ca' })
    this.#events.setMaxListeners(0)
  }

  /** Loads the journal (or creates the first keys) and publishes the bundle. */
  async init(): Promise<void> {
    const raw = await this.#o.ds.journal.get(this.#journalName)
    if (raw) {
      const j = parseJournal(raw)
      if (j) this.#journal = j
    } else if (this.#o.serverId !== undefined) {
      await this.#adoptLegacyJournal()
    }
    await this.#serial(() => this.#rotateLocked(true))
  }

  /**
   * Upgrade from one server without an ID: its journal `ca` becomes this server's when
   * this server's key manager holds every key of it (it is that server, restarted with
   * an ID), and `ca` is marked moved so that no other server takes it. Its content stays,
   * so an older version started again still finds its keys.
   */
  async #adoptLegacyJournal(): Promise<void> {
    const ds = this.#o.ds
    const legacyRaw = await ds.journal.get(LEGACY_JOURNAL_NAME)
    if (!legacyRaw) return
    const legacy = parseJournal(legacyRaw)
    if (!legacy || legacy.movedTo !== undefined) return
    const now = this.#o.clock.now()
    const live = [...legacy.x509, ...legacy.jwt].filter((s) => s.notAfter > now)
    if (live.length === 0) return
    for (const s of live) {
      try {
        await this.#o.keyManager.getKey(s.keyId)
      } catch {
        return // another server's journal (its keys are not in this key manager)
      }
    }
    const adopted = await ds.tx(async (t) => {
      const again = parseJournal((await t.journal.get(LEGACY_JOURNAL_NAME)) ?? '')
      if (!again || again.movedTo !== undefined || (await t.journal.get(this.#journalName)) !== undefined) return undefined
      await t.journal.put(this.#journalName, JSON.stringify(again))
      await t.journal.put(LEGACY_JOURNAL_NAME, JSON.stringify({ ...again, movedTo: this.#journalName }))
      // The single server's authorities are now this server's record.
      await t.kv.delete(AUTHORITIES_NAMESPACE, DEFAULT_SERVER_KEY)
      return again
    })
    if (!adopted) {
      const mine = parseJournal((await ds.journal.get(this.#journalName)) ?? '')
      if (mine) this.#journal = mine
      return
    }
    this.#journal = adopted
    this.#log.info({ journal: this.#journalName }, 'Adopted the single-server CA journal')
  }

  /**
   * Runs one rotation step (prepare / activate / retire / prune). Returns true when
   * the CA state changed; an activation alone leaves the published keys, and so the
   * bundle and its sequence, as they were (onBundleChange fires only for bundle changes).
   */
  rotate(): Promise<boolean> {
    return this.#serial(() => this.#rotateLocked(false))
  }

  /** Forces the next key of both kinds to be prepared now and activated now (operator rotation). */
  forceRotate(): Promise<boolean> {
    return this.#serial(async () => {
      const now = this.#o.clock.now()
      for (const s of this.#journal.x509) if (s.status === 'active') s.status = 'old'
      for (const s of this.#journal.jwt) if (s.status === 'active') s.status = 'old'
      if (!this.#journal.x509.some((s) => s.status === 'prepared')) await this.#prepareX509(now)
      if (!this.#journal.jwt.some((s) => s.status === 'prepared')) await this.#prepareJwt(now)
      return this.#rotateLocked(true)
    })
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#busy.then(fn, fn)
    this.#busy = p.catch(() => undefined)
    return p
  }

  async #rotateLocked(forcePublish: boolean): Promise<boolean> {
    const now = this.#o.clock.now()
    let changed = forcePublish
    const j = this.#journal

    // X.509 CA
    let active = j.x509.find((s) => s.status === 'active' && s.notAfter > now)
    let prepared = j.x509.find((s) => s.status === 'prepared' && s.notAfter > now)
    if (!active) {
      if (!prepared) prepared = await this.#prepareX509(now)
      prepared.status = 'active'
      active = prepared
      prepared = undefined
      changed = true
      this.#log.info({ [F.KEY_ID]: active.keyId }, 'X509 CA activated')
    }
    const life = active.notAfter - active.notBefore
    if (!prepared && now >= active.notAfter - Math.min(life / 2, 30 * 86_400_000)) {
      prepared = await this.#prepareX509(now)
      changed = true
    }
    if (prepared && now >= active.notAfter - Math.min(life / 6, 7 * 86_400_000)) {
      active.status = 'old'
      prepared.status = 'active'
      this.#log.info({ [F.KEY_ID]: prepared.keyId }, 'X509 CA activated')
      changed = true
    }

    // JWT signing key
    let jactive = j.jwt.find((s) => s.status === 'active' && s.notAfter > now)
    let jprepared = j.jwt.find((s) => s.status === 'prepared' && s.notAfter > now)
    if (!jactive) {
      if (!jprepared) jprepared = await this.#prepareJwt(now)
      jprepared.status = 'active'
      jactive = jprepared
      jprepared = undefined
      changed = true
      this.#log.info({ [F.KID]: jactive.kid }, 'JWT key activated')
    }
    const jlife = jactive.notAfter - jactive.notBefore
    if (!jprepared && now >= jactive.notAfter - Math.min(jlife / 2, 30 * 86_400_000)) {
      jprepared = await this.#prepareJwt(now)
      changed = true
    }
    if (jprepared && now >= jactive.notAfter - Math.min(jlife / 6, 7 * 86_400_000)) {
      jactive.status = 'old'
      jprepared.status = 'active'
      this.#log.info({ [F.KID]: jprepared.kid }, 'JWT key activated')
      changed = true
    }

    // Expired slots leave the bundle; their keys are destroyed.
    const expired = [...j.x509.filter((s) => s.notAfter <= now), ...j.jwt.filter((s) => s.notAfter <= now)]
    if (expired.length > 0) {
      j.x509 = j.x509.filter((s) => s.notAfter > now)
      j.jwt = j.jwt.filter((s) => s.notAfter > now)
      changed = true
    }

    if (changed) {
      await this.#o.ds.journal.put(this.#journalName, JSON.stringify(j))
      await this.#loadActive()
      await this.#publish()
      for (const s of expired) {
        await this.#o.keyManager
          .deleteKey(s.keyId)
          .catch((err: unknown) => this.#log.warn({ [F.KEY_ID]: s.keyId, [F.ERR]: String(err) }, 'Retired key could not be destroyed'))
        this.#log.info({ [F.KEY_ID]: s.keyId }, 'Retired key destroyed')
      }
    } else {
      if (!this.#x509 || !this.#jwt) await this.#loadActive()
      if (!this.#bundle) await this.#publish()
      // Other servers' rotations (their authorities in the datastore) reach this one here.
      else await this.#adoptUnion()
    }
    return changed
  }

  /**
   * Reads every server's authorities from the datastore again and adopts the bundle they
   * make (e.g. when the datastore signals that another server's authorities changed).
   * Returns true when this server's bundle changed; onBundleChange listeners have been called.
   */
  refreshBundle(): Promise<boolean> {
    return this.#serial(async () => (this.#bundle ? this.#adoptUnion() : false))
  }

  /**
   * With a datastore that pushes its changes (PostgreSQL), follows them: a change of the
   * local trust domain's bundle record, written by any server when the union of
   * authorities changed, or a feed reset, makes this server adopt the union at once
   * instead of at its next rotation check. Returns the function that stops following,
   * or undefined when the datastore has no change feed (the rotation check still runs).
   * A whole server does not call this: its change follower (changes/follower.ts,
   * `localBundle`) calls refreshBundle from the server's one subscription.
   */
  async followDatastoreChanges(): Promise<(() => Promise<void>) | undefined> {
    const ds = this.#o.ds
    if (!ds.changes) return undefined
    const td = this.#o.trustDomain.name
    const onEvent = (ev: ChangeFeedEvent) => {
      if (ev.type === 'changes' && !ev.changes.some((c) => c.kind === 'bundle' && c.key === td)) return
      return this.refreshBundle().then(
        () => undefined,
        (err: unknown) => this.#log.warn({ [F.ERR]: String(err) }, 'Bundle not refreshed after a datastore change'),
      )
    }
    const feed = await ds.changes({}, onEvent)
    return () => feed.close()
  }

  async #prepareX509(now: number): Promise<X509Slot> {
    const keyId = `${this.#keyPrefix}x509-ca-${++this.#journal.counter}`
    const key = await this.#o.keyManager.generateKey(keyId, this.#o.caKeyType)
    const notBefore = now - 10_000
    let notAfter = now + this.#o.caTtlMs
    const up = this.#o.upstream
    if (up) {
      const upNotAfter = Date.parse(new X509Certificate(up.certificate).validTo)
      notAfter = Math.min(notAfter, upNotAfter)
    }
    const der = await createCaCertificate({
      trustDomain: this.#o.trustDomain,
      publicKey: key.publicKey,
      signer: up ? up.signer : key,
      ...(up ? { issuer: { certificate: up.certificate } } : {}),
      notBefore: new Date(notBefore),
      notAfter: new Date(notAfter),
      ...(this.#o.caSubject ? { subject: this.#o.caSubject } : {}),
    })
    const slot: X509Slot = { keyId, cert: Buffer.from(der).toString('base64'), notBefore, notAfter, status: 'prepared' }
    this.#journal.x509.push(slot)
    this.#log.info({ [F.KEY_ID]: keyId, not_after: new Date(notAfter).toISOString() }, 'X509 CA prepared')
    return slot
  }

  async #prepareJwt(now: number): Promise<JwtSlot> {
    const keyId = `${this.#keyPrefix}jwt-${++this.#journal.counter}`
    const key = await this.#o.keyManager.generateKey(keyId, this.#o.jwtKeyType)
    const jwk = key.publicKey.export({ format: 'jwk' })
    const kid = randomBytes(16).toString('base64url')
    const slot: JwtSlot = { keyId, kid, jwk, notBefore: now, notAfter: now + this.#o.caTtlMs, status: 'prepared' }
    this.#journal.jwt.push(slot)
    this.#log.info({ [F.KID]: kid }, 'JWT key prepared')
    return slot
  }

  async #loadActive(): Promise<void> {
    const xs = this.#journal.x509.find((s) => s.status === 'active')
    const js = this.#journal.jwt.find((s) => s.status === 'active')
    if (!xs || !js) throw new IdentityError('ERR_INTERNAL', 'CA has no active key')
    const der = new Uint8Array(Buffer.from(xs.cert, 'base64'))
    const up = this.#o.upstream
    this.#x509 = {
      slot: xs,
      der,
      key: await this.#o.keyManager.getKey(xs.keyId),
      chainTail: up ? [der, up.certificate, ...up.intermediates].filter((c) => !up.roots.some((r) => Buffer.compare(r, c) === 0)) : [],
    }
    this.#jwt = { slot: js, key: await this.#o.keyManager.getKey(js.keyId) }
  }

  /** Publishes this server's authorities, then adopts the union of every server's. */
  async #publish(): Promise<void> {
    await putAuthorities(this.#o.ds.kv, this.#serverKey, this.#ownAuthorities())
    await this.#adoptUnion()
  }

  #ownAuthorities(): ServerAuthorities {
    const up = this.#o.upstream
    return {
      version: 1,
      x509: up
        ? up.roots.map((r) => ({ cert: Buffer.from(r).toString('base64'), notAfter: Date.parse(new X509Certificate(r).validTo) }))
        : this.#journal.x509.map((s) => ({ cert: s.cert, notAfter: s.notAfter })),
      jwt: this.#journal.jwt.map((s) => ({ kid: s.kid, jwk: s.jwk, notAfter: s.notAfter })),
    }
  }

  /**
   * The union of every server's authorities becomes the stored bundle (its sequence moved
   * only when the union changed; checked again in a transaction, so servers racing agree)
   * and this server's bundle. Returns true when this server's bundle changed.
   */
  async #adoptUnion(): Promise<boolean> {
    const td = this.#o.trustDomain
    const ds = this.#o.ds
    const now = this.#o.clock.now()
    const buildFrom = (u: Awaited<ReturnType<typeof unionOfAuthorities>>, sequenceNumber: number) =>
      SpiffeBundle.from({
        trustDomain: td,
        x509Authorities: u.x509,
        jwtAuthorities: new Map(u.jwt),
        sequenceNumber,
        refreshHintSeconds: this.#o.refreshHintSeconds,
      })
    // Unchanged content (e.g. a restart, or a check with nothing new) keeps its sequence: spiffe_sequence changes only with the bundle.
    const current = async (t: DataStore) => {
      const u = await unionOfAuthorities(t.kv, now)
      const prev = await t.bundles.get(td.name)
      const same = prev ? buildFrom(u, prev.sequence) : undefined
      return { u, prev, same: same && same.marshal() === prev!.document ? same : undefined }
    }
    let { same: bundle } = await current(ds)
    let wrote = false
    if (!bundle) {
      bundle = await ds.tx(async (t) => {
        const c = await current(t)
        if (c.same) return c.same
        const sequence = (c.prev?.sequence ?? 0) + 1
        const b = buildFrom(c.u, sequence)
        await t.bundles.put({ trustDomain: td.name, document: b.marshal(), sequence })
        // Servers whose authorities have all expired are gone: their records go too.
        for (const s of c.u.servers) if (!s.live && s.key !== this.#serverKey) await t.kv.delete(AUTHORITIES_NAMESPACE, s.key)
        this.#log.info({ [F.TRUST_DOMAIN]: td.name, sequence }, 'Bundle published')
        wrote = true
        return b
      })
    }
    // A restart that finds its bundle as it was changes nothing for anyone.
    const changed = this.#bundle === undefined ? wrote : this.#bundle.marshal() !== bundle.marshal()
    this.#bundle = bundle
    if (changed) this.#events.emit('bundle', bundle)
    return changed
  }

  /** The local trust domain's current bundle. */
  bundle(): SpiffeBundle {
    if (!this.#bundle) throw new IdentityError('ERR_NOT_CONFIGURED', 'CA is not initialised')
    return this.#bundle
  }

  onBundleChange(fn: (b: SpiffeBundle) => void): () => void {
    this.#events.on('bundle', fn)
    return () => this.#events.off('bundle', fn)
  }

  /** Longest lifetime an SVID signed now can have (it never outlives the active CA). */
  remainingCaLifetimeMs(): number {
    return Math.max(0, (this.#x509?.slot.notAfter ?? 0) - this.#o.clock.now())
  }

  /**
   * Signs an X.509-SVID with the active CA. Returns the chain (leaf first).
   * `publicKey` may be SPKI DER (`{ spki }`, e.g. from a verified CSR): no KeyObject is needed.
   */
  async signX509Svid(opts: {
    spiffeId: SpiffeId
    publicKey: KeyObject | SubjectPublicKey
    ttlMs: number
    dnsNames?: readonly string[]
  }): Promise<{ chain: Uint8Array[]; serial: string; notAfter: number }> {
    const ca = this.#x509
    if (!ca) throw new IdentityError('ERR_NOT_CONFIGURED', 'CA is not initialised')
    const now = this.#o.clock.now()
    const notAfter = Math.min(now + opts.ttlMs, ca.slot.notAfter)
    const leaf = await createX509Svid({
      spiffeId: opts.spiffeId,
      publicKey: opts.publicKey,
      signer: ca.key,
      issuer: { certificate: ca.der },
      notBefore: new Date(now - 10_000),
      notAfter: new Date(notAfter),
      ...(opts.dnsNames && opts.dnsNames.length > 0 ? { dnsNames: opts.dnsNames } : {}),
    })
    return { chain: [leaf, ...ca.chainTail], serial: serialOf(leaf), notAfter }
  }

  /**
   * The active X.509 CA for signing on this process's worker threads, or
   * undefined when its key cannot leave the key manager (an HSM key) or no CA
   * is active. The object stays the same until the next activation, so a
   * holder can tell a rotation by identity. Leaves signed with it must use
   * `validity()`, which keeps them within the CA's own lifetime, and carry
   * `chainTail` after them.
   */
  x509Delegate(): X509CaDelegate | undefined {
    const ca = this.#x509
    if (!ca) return undefined
    if (ca.delegate === undefined) {
      const privateKey = ca.key.inProcessKey?.()
      const caNotAfter = ca.slot.notAfter
      const clock = this.#o.clock
      ca.delegate = privateKey
        ? {
            certificate: ca.der,
            chainTail: ca.chainTail,
            privateKey,
            validity: (ttlMs) => {
              const now = clock.now()
              return { notBefore: now - 10_000, notAfter: Math.min(now + ttlMs, caNotAfter) }
            },
          }
        : null
    }
    return ca.delegate ?? undefined
  }

  /** Mints a JWT-SVID with the active JWT key; `exp` never passes the key's own expiry. */
  async mintJwtSvid(opts: {
    spiffeId: SpiffeId
    audience: readonly string[]
    ttlMs: number
  }): Promise<{ token: string; expiresAt: number; issuedAt: number; kid: string }> {
    const jwt = this.#jwt
    if (!jwt) throw new IdentityError('ERR_NOT_CONFIGURED', 'CA is not initialised')
    const now = this.#o.clock.now()
    const issuedAt = Math.floor(now / 1000) * 1000
    const expiresAt = Math.floor(Math.min(now + opts.ttlMs, jwt.slot.notAfter) / 1000) * 1000
    if (expiresAt <= issuedAt) throw new IdentityError('ERR_UNAVAILABLE', 'JWT key is about to expire; retry after rotation')
    const token = await mintJwtSvid({
      spiffeId: opts.spiffeId,
      audience: [...opts.audience],
      expiresAt: new Date(expiresAt),
      issuedAt: new Date(issuedAt),
      signer: jwt.key,
      kid: jwt.slot.kid,
      ...(this.#o.jwtIssuer ? { issuer: this.#o.jwtIssuer } : {}),
    })
    return { token, expiresAt, issuedAt, kid: jwt.slot.kid }
  }

  /** The active JWT key as a Signer and its kid (for documents signed with the trust domain's JWT key). */
  jwtSigner(): { signer: Signer; kid: string } {
    const j = this.#jwt
    if (!j) throw new IdentityError('ERR_NOT_CONFIGURED', 'CA is not initialised')
    return { signer: j.key, kid: j.slot.kid }
  }

  /** A summary of the slots, for `bundle show`-style diagnostics and tests. */
  slots(): {
    x509: { keyId: string; status: SlotStatus; notAfter: number; fingerprint: string }[]
    jwt: { kid: string; status: SlotStatus; notAfter: number }[]
  } {
    return {
      x509: this.#journal.x509.map((s) => ({
        keyId: s.keyId,
        status: s.status,
        notAfter: s.notAfter,
        fingerprint: createHash('sha256').update(Buffer.from(s.cert, 'base64')).digest('hex'),
      })),
      jwt: this.#journal.jwt.map((s) => ({ kid: s.kid, status: s.status, notAfter: s.notAfter })),
    }
  }
}

function parseJournal(raw: string): Journal | undefined {
  if (raw === '') return undefined
  try {
    const j = JSON.parse(raw) as Journal
    return j.version === 1 && Array.isArray(j.x509) && Array.isArray(j.jwt) ? j : undefined
  } catch (cause) {
    throw new IdentityError('ERR_DATASTORE', 'CA journal is corrupt', { cause })
  }
}

/**
 * The certificate's serial number as lower-case hex, as `X509Certificate.serialNumber`
 * prints it (whole bytes, no leading zero bytes). Read straight from the DER
 * (Certificate → TBSCertificate → [0] version? → serial): parsing the whole
 * certificate with node for this cost as much as signing it.
 */
export function serialOf(der: Uint8Array): string {
  try {
    const cert = readTlv(der, 0, der.length)
    const tbs = readTlv(der, cert.body, cert.end)
    let t = readTlv(der, tbs.body, tbs.end)
    if (der[t.start] === 0xa0) t = readTlv(der, t.end, tbs.end)
    if (der[t.start] !== 0x02 || t.end - t.body < 1) throw new Error('no serial')
    let i = t.body
    while (i < t.end - 1 && der[i] === 0) i++
    return Buffer.from(der.subarray(i, t.end)).toString('hex')
  } catch {
    return new X509Certificate(der).serialNumber.toLowerCase()
  }
}
