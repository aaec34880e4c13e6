/**
 * Child process of bench/workload-api.ts: an AgentManager fed by an in-process
 * fake server, behind the real Workload API socket, plus a bare grpc-js unary
 * echo on another Unix socket (the baseline). Talks to the parent over IPC.
 */
import * as grpc from '@grpc/grpc-js'
import { randomBytes } from 'node:crypto'
import { parseUnixAttestorConfig, UnixWorkloadAttestor } from '../attestors/workload/unix/index.js'
import { AgentManager } from '../src/agent/manager/manager.js'
import type { AgentEntry, SvidSigner } from '../src/agent/server-client.js'
import { attestationReuseMs, attestWorkload } from '../src/agent/workload/attest-workload.js'
import { startWorkloadApi } from '../src/agent/workload-api/start-workload-api.js'
import { systemClock } from '../src/common/clock.js'
import { nullLogger } from '../src/common/log/logger.js'
import { generateKeyPair, KeyObjectSigner, SpiffeBundle, TrustDomain } from '../src/spiffe/index.js'

const [dir, nArg] = process.argv.slice(2)
const n = Number(nArg)
const td = TrustDomain.fromString('example.org')
const FAKE_CERT = randomBytes(650) // a typical EC P-256 leaf is 550-750 bytes
FAKE_CERT[0] = 0x30
const signer: SvidSigner = {
  async batchNewX509Svid(params) {
    return params.map((p) => ({ entryId: p.entryId, error: undefined, svidChain: [new Uint8Array(FAKE_CERT)], expiresAt: Date.now() + 3_600_000 }))
  },
  async newJwtSvid(entryId, audience) {
    return { token: `tok.${entryId}.${audience.join(',')}`, issuedAt: Date.now(), expiresAt: Date.now() + 300_000 }
  },
}
const jwk = new KeyObjectSigner(generateKeyPair('ec-p256').privateKey).publicKey.export({ format: 'jwk' })
const bundle = { trustDomain: td.name, document: SpiffeBundle.from({ trustDomain: td, jwtAuthorities: [['k', jwk]] }).marshal(), sequence: 1 }
const uid = process.getuid!()
const entry = (i: number, revision = 1): AgentEntry => ({
  id: `e${i}`,
  spiffeId: `spiffe://example.org/w${i}`,
  parentId: 'spiffe://example.org/agent',
  selectors: [i === 0 ? `unix:uid:${uid}` : `unix:uid:${100_000 + i}`],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  hint: '',
  revision,
})

const attestors = [{ name: 'unix', attestor: new UnixWorkloadAttestor({ ...parseUnixAttestorConfig({}), log: nullLogger }) }]

const gc = (globalThis as { gc?: () => void }).gc!
const mem = () => {
  gc()
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

const manager = new AgentManager({
  trustDomain: td,
  signer,
  clock: systemClock,
  log: nullLogger,
  // Full workload attestation per call, as the agent wires it (agent.ts): the
  // unix attestor with its default config (uid/gid/groups and names, path and
  // sha256 of the caller's executable).
  attestWorkload: (peer, o) => attestWorkload(peer, attestors, o, nullLogger),
  x509SvidCacheMaxSize: Math.max(1000, n),
  tickIntervalMs: 50,
})
const before = mem()
await manager.applySync({ full: true, entries: Array.from({ length: n }, (_, i) => entry(i)), deletedEntryIds: [], bundle, federatedBundles: [] })
const after = mem()

const echo = new grpc.Server()
const id = (b: Buffer) => b
echo.addService(
  {
    Echo: {
      path: '/bench.Echo/Echo',
      requestStream: false,
      responseStream: false,
      requestSerialize: id,
      requestDeserialize: id,
      responseSerialize: id,
      responseDeserialize: id,
      originalName: 'Echo',
    },
  },
  { Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) },
)
await new Promise<void>((res, rej) => echo.bindAsync(`unix:${dir}/echo.sock`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())))
await startWorkloadApi({ socketPath: `${dir}/api.sock`, manager, log: nullLogger, attestationReuseMs: attestationReuseMs(attestors) })

// A clean exit on SIGTERM lets --cpu-prof write its profile.
process.on('SIGTERM', () => process.exit(0))

let revision = 1
const rotate = async () => {
  revision++
  await manager.applySync({ full: false, entries: [entry(0, revision)], deletedEntryIds: [], bundle: undefined, federatedBundles: undefined })
  await manager.tick()
}
process.on('message', (m: string) => {
  if (m === 'rotate') {
    rotate().catch((err: unknown) => {
      process.stderr.write(`rotation failed: ${String(err)}\n`)
      process.exit(1)
    })
  } else if (m === 'exit') process.exit(0)
})
process.send!({ ready: true, cached: manager.stats().cachedX509Svids, heapGrowth: after - before })
