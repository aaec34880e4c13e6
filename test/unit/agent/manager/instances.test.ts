/**
 * Per-instance identities in the agent manager: a fake server (signer +
 * instance registry) and an injected process table drive registration, keys,
 * rotation, process end, pending-end retries and the restart clean-up.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { AgentManager } from '../../../../src/agent/manager/manager.js'
import type {
  AgentEntry,
  BundleDoc,
  InstanceClient,
  JwtSvidMint,
  RegisteredInstance,
  SvidSigner,
  X509SvidParam,
  X509SvidResultItem,
} from '../../../../src/agent/server-client.js'
import type { WorkloadUpdate } from '../../../../src/agent/workload-api/manager.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { SpiffeBundle, TrustDomain } from '../../../../src/spiffe/index.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const TD = TrustDomain.fromString('example.org')
const X509_TTL = 100_000
const TEMPLATE = 'spiffe://example.org/agents/payments/refund-bot/{instance}'
const SEL = ['unix:uid:1000']

/** The server side: records instances, signs only for live recorded ones, counts every call. */
class FakeServer implements SvidSigner, InstanceClient {
  down = false
  serial = 0
  readonly live = new Map<string, { entryId: string; pid: number; startTime: string; spiffeId: string }>()
  readonly ended = new Set<string>()
  readonly calls: string[] = []
  readonly signed: X509SvidParam[] = []
  readonly jwt: { entryId: string; instanceId: string | undefined }[] = []
  /** Entry id → template, as the server's registry would hold it. */
  readonly templates = new Map<string, string>()
  readonly clock: FakeClock
  constructor(clock: FakeClock) {
    this.clock = clock
  }
  #check(): void {
    if (this.down) throw new IdentityError('ERR_UNAVAILABLE', 'server down')
  }
  async registerInstance(entryId: string, proc: { pid: number; startTime: string }): Promise<RegisteredInstance> {
    this.calls.push(`register:${proc.pid}`)
    this.#check()
    const instanceId = `i${String(++this.serial).padStart(25, '0')}`
    const spiffeId = (this.templates.get(entryId) ?? TEMPLATE).replace('{instance}', instanceId)
    this.live.set(instanceId, { entryId, ...proc, spiffeId })
    return { instanceId, spiffeId }
  }
  async endInstance(instanceId: string): Promise<void> {
    this.calls.push(`end:${instanceId}`)
    this.#check()
    if (!this.live.delete(instanceId)) throw new IdentityError('ERR_NOT_FOUND', 'instance not found')
    this.ended.add(instanceId)
  }
  async endAllInstances(): Promise<number> {
    this.calls.push('endAll')
    this.#check()
    const n = this.live.size
    for (const id of this.live.keys()) this.ended.add(id)
    this.live.clear()
    return n
  }
  async batchNewX509Svid(params: X509SvidParam[]): Promise<X509SvidResultItem[]> {
    this.#check()
    return params.map((p) => {
      this.signed.push(p)
      const inst = p.instanceId ? this.live.get(p.instanceId) : undefined
      if (p.instanceId && !inst)
        return { entryId: p.entryId, error: new IdentityError('ERR_ID_NOT_AUTHORIZED', 'permission denied'), svidChain: [], expiresAt: 0 }
      const id = inst ? inst.spiffeId : `spiffe://example.org/${p.entryId}`
      return {
        entryId: p.entryId,
        error: undefined,
        svidChain: [new Uint8Array(Buffer.from(`${id}#${++this.serial}`))],
        expiresAt: this.clock.now() + X509_TTL,
      }
    })
  }
  async newJwtSvid(entryId: string, audience: string[], opts: { instanceId?: string } = {}): Promise<JwtSvidMint> {
    this.#check()
    this.jwt.push({ entryId, instanceId: opts.instanceId })
    const now = this.clock.now()
    return { token: `tok-${opts.instanceId ?? entryId}-${audience.join('+')}-${++this.serial}`, issuedAt: now, expiresAt: now + 60_000 }
  }
}

function entry(id: string, spiffeId: string): AgentEntry {
  return {
    id,
    spiffeId,
    parentId: 'spiffe://example.org/agent',
    selectors: SEL,
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    hint: '',
    revision: 1,
  }
}

const localBundle: BundleDoc = { trustDomain: 'example.org', document: SpiffeBundle.from({ trustDomain: TD }).marshal(), sequence: 1 }
const full = (entries: AgentEntry[]) => ({ full: true, entries, deletedEntryIds: [], bundle: localBundle, federatedBundles: [] })
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
}

function setup(o: { endPrevious?: boolean; maxPendingEnds?: number } = {}) {
  const clock = new FakeClock()
  const server = new FakeServer(clock)
  /** pid → start time of the "running" processes. */
  const procs = new Map<number, string>([
    [101, '5000'],
    [102, '5001'],
  ])
  const manager = new AgentManager({
    trustDomain: TD,
    signer: server,
    instances: server,
    clock,
    log: nullLogger,
    attestWorkload: async () => SEL,
    autoTick: false,
    random: () => 0.5,
    retryBackoff: { initialMs: 1000, maxMs: 8000 },
    readStartTime: (pid) => procs.get(pid),
    processCheckIntervalMs: 1000,
    ...(o.maxPendingEnds ? { maxPendingEnds: o.maxPendingEnds } : {}),
  })
  if (o.endPrevious) void manager.endPreviousInstances()
  return { clock, server, procs, manager }
}

function watch(manager: AgentManager, pid: number, startTime: string | undefined) {
  const updates: WorkloadUpdate[] = []
  const peer = startTime === undefined ? { pid, uid: 1000, gid: 1000, groups: [] } : { pid, uid: 1000, gid: 1000, groups: [], startTime }
  const unsubscribe = manager.subscribe(SEL, (u) => updates.push(u), { peer })
  const last = () => updates.at(-1)
  return {
    updates,
    unsubscribe,
    ids: () => last()?.identities.map((i) => i.spiffeId) ?? [],
    instance: () => last()?.identities.find((i) => i.spiffeId.startsWith(TEMPLATE.slice(0, -'{instance}'.length))),
  }
}

const pubOf = (pkcs8: Uint8Array) => createPublicKey(createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' })).export({ format: 'jwk' })

describe('AgentManager: per-instance identities', () => {
  it('two processes matching one template get two instances with their own SPIFFE IDs and keys; plain entries are shared', async () => {
    const { manager, server } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE), entry('plain', 'spiffe://example.org/plain')]))
    const a = watch(manager, 101, '5000')
    const b = watch(manager, 102, '5001')
    await settle()
    const ia = a.instance()!
    const ib = b.instance()!
    expect(ia.spiffeId).toMatch(/\/refund-bot\/i\d{25}$/)
    expect(ib.spiffeId).not.toBe(ia.spiffeId)
    expect(pubOf(ia.x509SvidKey)).not.toEqual(pubOf(ib.x509SvidKey))
    expect(a.ids()).toContain('spiffe://example.org/plain')
    expect(b.ids()).toContain('spiffe://example.org/plain')
    // Each process sees only its own instance.
    expect(a.ids()).not.toContain(ib.spiffeId)
    // A second stream of the same process gets the same instance; no new registration.
    const a2 = watch(manager, 101, '5000')
    await settle()
    expect(a2.instance()!.spiffeId).toBe(ia.spiffeId)
    expect(server.calls.filter((c) => c.startsWith('register:'))).toEqual(['register:101', 'register:102'])
    expect(
      server.signed
        .filter((p) => p.entryId === 'tpl')
        .map((p) => p.instanceId)
        .sort(),
    ).toEqual([...server.live.keys()].sort())
    expect(manager.stats()).toMatchObject({ instances: 2, processes: 2 })
  })

  it('a caller without a known process start time gets no per-instance identity', async () => {
    const { manager, server } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const w = watch(manager, 101, undefined)
    await settle()
    expect(w.ids()).toEqual([])
    expect(server.calls).toEqual([])
  })

  it('rotates an instance SVID at half-life while the process lives, with a fresh key', async () => {
    const { manager, server, clock } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(manager, 101, '5000')
    await settle()
    const first = a.instance()!
    clock.advance(X509_TTL / 2 + 1)
    await manager.tick()
    await settle()
    const second = a.instance()!
    expect(second.spiffeId).toBe(first.spiffeId)
    expect(Buffer.from(second.x509Svid[0]!).toString()).not.toBe(Buffer.from(first.x509Svid[0]!).toString())
    expect(pubOf(second.x509SvidKey)).not.toEqual(pubOf(first.x509SvidKey))
    expect(server.calls.filter((c) => c.startsWith('register:'))).toHaveLength(1)
  })

  it.each([
    ['exits', (procs: Map<number, string>) => procs.delete(101)],
    ['is replaced by another process with the same pid', (procs: Map<number, string>) => procs.set(101, '9999')],
  ])('when the process %s: EndInstance, no longer served, never renewed, nothing left', async (_t, change) => {
    const { manager, server, clock, procs } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(manager, 101, '5000')
    const b = watch(manager, 102, '5001')
    await settle()
    await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: { pid: 101, uid: 1000, gid: 1000, groups: [], startTime: '5000' } })
    const gone = a.instance()!.spiffeId.split('/').at(-1)!
    expect(manager.stats().cachedJwtSvids).toBe(1)
    change(procs)
    clock.advance(1000)
    await manager.tick()
    await settle()
    expect(server.calls).toContain(`end:${gone}`)
    expect(server.ended.has(gone)).toBe(true)
    expect(a.ids()).toEqual([]) // the open stream no longer carries it
    expect(b.instance()).toBeDefined()
    expect(manager.stats()).toMatchObject({ instances: 1, processes: 1, pendingEnds: 0, cachedJwtSvids: 0 })
    const signedBefore = server.signed.length
    clock.advance(X509_TTL / 2 + 1)
    await manager.tick()
    await settle()
    // Only the live process's instance was renewed.
    expect(server.signed.slice(signedBefore).map((p) => p.instanceId)).toEqual([b.instance()!.spiffeId.split('/').at(-1)])
    // A stream still open for the dead process does not open a new instance.
    const again = watch(manager, 101, '5000')
    await settle()
    expect(again.ids()).toEqual([])
    expect(server.calls.filter((c) => c.startsWith('register:'))).toHaveLength(2)
  })

  it("JWT-SVIDs of a template entry are minted for the caller's instance", async () => {
    const { manager, server } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE), entry('plain', 'spiffe://example.org/plain')]))
    const peerA = { pid: 101, uid: 1000, gid: 1000, groups: [], startTime: '5000' }
    const peerB = { pid: 102, uid: 1000, gid: 1000, groups: [], startTime: '5001' }
    const ja = await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: peerA })
    const jb = await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: peerB })
    const instA = ja.find((j) => j.spiffeId !== 'spiffe://example.org/plain')!
    const instB = jb.find((j) => j.spiffeId !== 'spiffe://example.org/plain')!
    expect(instA.spiffeId).not.toBe(instB.spiffeId)
    expect(instA.token).toContain(instA.spiffeId.split('/').at(-1))
    expect(server.jwt.filter((j) => j.entryId === 'tpl').map((j) => j.instanceId)).toEqual([instA.spiffeId.split('/').at(-1), instB.spiffeId.split('/').at(-1)])
    // Filtering by the instance's own SPIFFE ID works; another instance's ID gives nothing.
    expect(await manager.fetchJwtSvids(SEL, { audience: ['svc'], spiffeId: instA.spiffeId }, { peer: peerA })).toHaveLength(1)
    expect(await manager.fetchJwtSvids(SEL, { audience: ['svc'], spiffeId: instB.spiffeId }, { peer: peerA })).toHaveLength(0)
    // The X.509 stream of the same process uses the same instance.
    const a = watch(manager, 101, '5000')
    await settle()
    expect(a.instance()!.spiffeId).toBe(instA.spiffeId)
  })

  it('queues ends while the server is down and reports them after the backoff', async () => {
    const { manager, server, clock, procs } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(manager, 101, '5000')
    await settle()
    const id = a.instance()!.spiffeId.split('/').at(-1)!
    server.down = true
    procs.delete(101)
    clock.advance(1000)
    await manager.tick()
    await settle()
    expect(manager.stats()).toMatchObject({ instances: 0, processes: 0, pendingEnds: 1 })
    expect(a.ids()).toEqual([])
    server.down = false
    await manager.tick() // still backing off: no call
    expect(server.ended.has(id)).toBe(false)
    clock.advance(1200)
    await manager.tick()
    expect(server.ended.has(id)).toBe(true)
    expect(manager.stats().pendingEnds).toBe(0)
  })

  it('bounds the queue of unreported ends (oldest dropped)', async () => {
    const { manager, server, clock, procs } = setup({ maxPendingEnds: 2 })
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    for (let pid = 200; pid < 205; pid++) procs.set(pid, '7')
    for (let pid = 200; pid < 205; pid++) watch(manager, pid, '7')
    await settle()
    server.down = true
    for (let pid = 200; pid < 205; pid++) procs.delete(pid)
    clock.advance(1000)
    await manager.tick()
    await settle()
    expect(manager.stats().pendingEnds).toBe(2)
  })

  it("on start, ends the previous run's instances before registering any new one, retrying until it succeeds", async () => {
    const { manager, server, clock } = setup()
    server.down = true
    const started = manager.endPreviousInstances()
    await started
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(manager, 101, '5000')
    await settle()
    expect(server.calls).toEqual(['endAll']) // no registration while EndAllInstances has not succeeded
    expect(a.ids()).toEqual([])
    server.down = false
    clock.advance(1200)
    await manager.tick()
    await settle()
    expect(server.calls.slice(0, 3)).toEqual(['endAll', 'endAll', 'register:101'])
    expect(a.instance()).toBeDefined()
  })

  it('a restarted agent (new manager, same server) never serves an instance of the previous run', async () => {
    const first = setup()
    await first.manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(first.manager, 101, '5000')
    await settle()
    const old = a.instance()!.spiffeId
    first.manager.close()
    // The new run talks to the same server.
    const clock = first.clock
    const m2 = new AgentManager({
      trustDomain: TD,
      signer: first.server,
      instances: first.server,
      clock,
      log: nullLogger,
      attestWorkload: async () => SEL,
      autoTick: false,
      random: () => 0.5,
      readStartTime: (pid) => first.procs.get(pid),
    })
    await m2.endPreviousInstances()
    await m2.applySync(full([entry('tpl', TEMPLATE)]))
    const a2 = watch(m2, 101, '5000')
    await settle()
    expect(first.server.ended.has(old.split('/').at(-1)!)).toBe(true)
    expect(a2.instance()!.spiffeId).not.toBe(old)
    m2.close()
  })

  it('an entry deleted or re-templated ends its instances', async () => {
    const { manager, server } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    const a = watch(manager, 101, '5000')
    await settle()
    const id1 = a.instance()!.spiffeId.split('/').at(-1)!
    server.templates.set('tpl', 'spiffe://example.org/agents/other/{instance}')
    await manager.applySync({
      full: false,
      entries: [{ ...entry('tpl', 'spiffe://example.org/agents/other/{instance}'), revision: 2 }],
      deletedEntryIds: [],
      bundle: undefined,
      federatedBundles: undefined,
    })
    await settle()
    expect(server.ended.has(id1)).toBe(true)
    expect(a.ids()[0]).toMatch(/^spiffe:\/\/example\.org\/agents\/other\/i\d{25}$/)
    const id2 = a.ids()[0]!.split('/').at(-1)!
    await manager.applySync({ full: false, entries: [], deletedEntryIds: ['tpl'], bundle: undefined, federatedBundles: undefined })
    await settle()
    expect(server.ended.has(id2)).toBe(true)
    expect(manager.stats()).toMatchObject({ instances: 0, processes: 0 })
  })

  it('1,000 instances started and ended leave no per-instance state behind', async () => {
    const { manager, server, clock, procs } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE)]))
    for (let round = 0; round < 10; round++) {
      const subs: (() => void)[] = []
      for (let k = 0; k < 100; k++) {
        const pid = 1000 + round * 100 + k
        procs.set(pid, String(round))
        subs.push(watch(manager, pid, String(round)).unsubscribe)
        await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: { pid, uid: 1000, gid: 1000, groups: [], startTime: String(round) } })
      }
      await settle()
      expect(manager.stats().instances).toBe(100)
      for (let k = 0; k < 100; k++) procs.delete(1000 + round * 100 + k)
      for (const u of subs) u()
      clock.advance(1000)
      await manager.tick()
    }
    await settle()
    expect(server.ended.size).toBe(1000)
    expect(server.live.size).toBe(0)
    expect(manager.stats()).toMatchObject({ instances: 0, processes: 0, pendingEnds: 0, subscribers: 0, cachedJwtSvids: 0, cachedX509Svids: 0 })
  })
})

describe('AgentManager: a revoked instance', () => {
  it('pushed on Sync by instance ID: only that instance loses its X.509- and JWT-SVIDs, is not renewed, and the others keep theirs', async () => {
    const { manager, server, clock } = setup()
    await manager.applySync(full([entry('tpl', TEMPLATE), entry('plain', 'spiffe://example.org/plain')]))
    const a = watch(manager, 101, '5000')
    const b = watch(manager, 102, '5001')
    await settle()
    const ia = a.instance()!.spiffeId
    const ib = b.instance()!.spiffeId
    const idA = ia.split('/').at(-1)!
    const peerA = { pid: 101, uid: 1000, gid: 1000, groups: [], startTime: '5000' }
    expect((await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: peerA })).map((j) => j.spiffeId)).toContain(ia)

    await manager.applySync({
      full: false,
      entries: [],
      deletedEntryIds: [],
      bundle: undefined,
      federatedBundles: undefined,
      revocations: [{ id: 1, kind: 'instance', value: idA, expiresAt: 0 }],
    })
    await settle()
    expect(a.ids()).toEqual(['spiffe://example.org/plain'])
    expect(b.ids()).toContain(ib)
    const jwtBefore = server.jwt.length
    expect((await manager.fetchJwtSvids(SEL, { audience: ['svc'] }, { peer: peerA })).map((j) => j.spiffeId)).toEqual(['spiffe://example.org/plain'])
    expect(server.jwt.slice(jwtBefore).map((j) => j.instanceId)).not.toContain(idA)

    // Past half-life: B's instance renews, A's is neither renewed nor served.
    const signedBefore = server.signed.length
    clock.advance(X509_TTL / 2 + 1)
    await manager.tick()
    await settle()
    const renewed = server.signed.slice(signedBefore).map((p) => p.instanceId)
    expect(renewed).toContain(ib.split('/').at(-1))
    expect(renewed).not.toContain(idA)
    expect(a.ids()).toEqual(['spiffe://example.org/plain'])
  })
})
