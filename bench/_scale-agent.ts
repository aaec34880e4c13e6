/**
 * Child process of bench/scale.ts: the agent's side, over real gRPC and TLS to
 * the parent's server. Attests with a join token, then (on 'go') times full
 * Sync streams and measures the heap of an AgentManager holding the synced
 * entries, then also every entry's X.509-SVID (signed by the server).
 * Run with --expose-gc. Talks to the parent over IPC.
 */
import { joinTokenAgent } from '../attestors/node/join-token/agent.js'
import { AgentManager } from '../src/agent/manager/manager.js'
import { attestNode } from '../src/agent/node-attestation.js'
import { GrpcServerClient, type SyncMessage } from '../src/agent/server-client.js'
import { systemClock } from '../src/common/clock.js'
import { newEcPrivateKey } from '../src/common/crypto/new-key.js'
import { nullLogger } from '../src/common/log/logger.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { createCsr } from '../src/spiffe/x509-svid/csr.js'
import { X509Svid } from '../src/spiffe/x509-svid/x509-svid.js'

interface Init {
  address: string
  trustDomain: string
  bundlePem: string
  token: string
}
interface Go {
  entries: number
  rounds: number
  svids: number
}

const gc = (globalThis as { gc?: () => void }).gc!
const mem = () => {
  gc()
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}
const next = <T>() => new Promise<T>((resolve) => process.once('message', (m) => resolve(m as T)))

const init = await next<Init>()
const td = TrustDomain.fromString(init.trustDomain)
const key = newEcPrivateKey('P-256')
const boot = new GrpcServerClient({ address: init.address, trustDomain: td, credentials: { rootsPem: init.bundlePem } })
const out = await attestNode({
  client: boot,
  attestorName: 'join_token',
  attestor: joinTokenAgent(init.token),
  privateKey: key,
  trustDomain: td,
  log: nullLogger,
})
boot.close()
const svid = X509Svid.fromChain(out.svidChain, key)
const client = new GrpcServerClient({
  address: init.address,
  trustDomain: td,
  credentials: { rootsPem: init.bundlePem, keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string, chainPem: svid.certificatesPem() },
})
process.send!({ agentId: out.agentId })
const go = await next<Go>()

/** One Sync stream until its full set (every page) has arrived and been decoded; returns it and the time it took. */
async function fullSync(): Promise<{ ms: number; msg: SyncMessage }> {
  const abort = new AbortController()
  const t0 = performance.now()
  let got: SyncMessage | undefined
  const done = client.sync(
    (m) => {
      if (!got && m.full) {
        got = m
        abort.abort()
      }
    },
    { signal: abort.signal },
  )
  await done
  if (!got) throw new Error('Sync ended without a full update')
  return { ms: performance.now() - t0, msg: got }
}

const times: number[] = []
let synced = 0
let messages = 0
for (let r = 0; r < go.rounds; r++) {
  const { ms, msg } = await fullSync()
  times.push(ms)
  synced = msg.entries.length
  messages++
}

// Memory: the entries alone (a manager that mints at most one SVID), then the entries and `svids` SVIDs.
const newManager = (max: number) =>
  new AgentManager({
    trustDomain: td,
    signer: client,
    clock: systemClock,
    log: nullLogger,
    attestWorkload: async () => [],
    x509SvidCacheMaxSize: max,
    autoTick: false,
  })
let m0 = mem()
let manager: AgentManager | undefined = newManager(1)
await manager.applySync((await fullSync()).msg)
const entriesHeld = manager.stats().entries
const perEntry = (mem() - m0) / entriesHeld
manager.close()
manager = undefined

m0 = mem()
manager = newManager(go.svids)
const mintStart = performance.now()
await manager.applySync((await fullSync()).msg)
while (manager.stats().cachedX509Svids < Math.min(go.svids, entriesHeld) && performance.now() - mintStart < 60_000) {
  await manager.tick()
  await new Promise((r) => setTimeout(r, 50))
}
const mintMs = performance.now() - mintStart
const cached = manager.stats().cachedX509Svids
const growth = mem() - m0
const perSvid = (growth - perEntry * entriesHeld) / cached
// The least an SVID takes: its DER chain and its PKCS#8 key, as bytes (one more SVID, signed the same way).
const k = newEcPrivateKey('P-256')
const entryId = (await fullSync()).msg.entries[0]!.id
const [one] = await client.batchNewX509Svid([{ entryId, csr: await createCsr({ privateKey: k }) }])
const rawBytes = one!.svidChain.reduce((n, c) => n + c.byteLength, 0) + k.export({ type: 'pkcs8', format: 'der' }).byteLength
manager.close()
client.close()
process.send!({ times, synced, messages, perEntry, perSvid, cached, mintMs, rawBytes })
process.exit(0)
