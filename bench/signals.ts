/**
 * `npm run bench -- signals`: signal_to_refusal_p99_ms.
 *
 * Two brokers as `warrant server run` composes them (startBroker: SQLite
 * stores, Fastify on node:https, admin sockets), each with its own X.509-SVID
 * of one trust domain. A is an SSF transmitter; B subscribes to A by push
 * (RFC 8935) with a response policy that revokes the instance a
 * `credential-compromise` names. A resource server's verifier holds B's
 * revocation feed (RevocationFeed, mutual TLS), from which its middleware
 * refuses a token of a revoked instance.
 *
 * Each sample: a credential-compromise signal about a new instance is sent at
 * A (its admin socket, as `warrant signal send` does); the figure is the time
 * from that call to the verifier holding B's revocation of that instance: SET
 * stored and signed at A, pushed over HTTPS, verified at B (signature, iss,
 * aud, jti), the policy's decision, the revocation recorded at B and fanned
 * out on its feed. p99 over the samples. Target p99 <= 1000 ms.
 *
 * Baseline in the same run, same brokers and verifier: the same instance
 * revocation made directly at B's admin socket (as `warrant revoke instance`
 * does), to the verifier holding it: the revocation path alone, without the
 * signal.
 */
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { toEmbeddedBrokerConfig } from '../src/broker/config.js'
import { brokerAdminCall } from '../src/cli/broker-admin-client.js'
import { createBrokerKeyManager, startBroker, type RunningBroker } from '../src/cli/broker-composition.js'
import { createLogger } from '../src/cli/logging.js'
import { RevocationFeed } from '../src/resource-server/revocation-feed.js'
import { BoundsSet } from '../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { bundlesOf, makeCa, makeSvid, pem } from '../test/helpers/broker-http-fixtures.js'
import { freePort, report } from './lib.js'

const TD = 'bench.example'
const A_ID = `spiffe://${TD}/warrant/broker-a`
const B_ID = `spiffe://${TD}/warrant/broker-b`

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const samples = quick ? 10 : 50
  const dir = mkdtempSync(join(tmpdir(), 'wbench-sig-'))
  const load0 = loadavg()[0]!
  const brokers: RunningBroker[] = []
  const kms: { close?(): Promise<void> }[] = []
  let feed: RevocationFeed | undefined
  try {
    const ca = await makeCa(TD)
    const caFile = join(dir, 'ca.pem')
    writeFileSync(caFile, pem(ca.certificate))
    const rs = await makeSvid(ca, `spiffe://${TD}/rs/verifier`)
    const td = TrustDomain.fromString(TD)
    const bundles = bundlesOf([ca])
    const log = createLogger({ name: 'warrant-signals-bench', level: 'info', destination: openSync('/dev/null', 'w') })
    const [portA, portB] = [await freePort(), await freePort()]
    const issuerA = `https://localhost:${portA}`

    const start = async (name: string, id: string, port: number, section: Record<string, unknown>) => {
      const d = join(dir, name)
      const svid = await makeSvid(ca, id, { dnsNames: ['localhost'] })
      const config = toEmbeddedBrokerConfig(
        { issuer: `https://localhost:${port}`, bind_address: `127.0.0.1:${port}`, key_manager: { memory: {} }, signals: section },
        d,
        d,
      )!
      const km = await createBrokerKeyManager(config.keyManager!, { log, trustDomain: td, dataDir: d })
      kms.push(km)
      const b = await startBroker({
        config,
        keyManager: km,
        trust: { localTrustDomain: () => td, bundles: () => bundles, version: () => bundles },
        jwtBundles: bundles,
        identity: { current: () => ({ certChainPem: svid.certPem, keyPem: svid.keyPem }), onChange: () => () => undefined },
        bounds: () => BoundsSet.parse(td, { '/agents': { scopes: ['read'], resources: ['https://rs.bench.example'] } }),
        log,
      })
      brokers.push(b)
      return { broker: b, admin: config.adminSocketPath }
    }

    const a = await start('a', A_ID, portA, { receivers: [B_ID] })
    const b = await start('b', B_ID, portB, {
      transmitters: [{ issuer: issuerA, ca_file: caFile, delivery: 'push' }],
      policy: [{ event: 'credential-compromise', match: { prefix: `spiffe://${TD}/agents/` }, action: 'revoke', level: 'instance' }],
    })

    const waiting = new Map<string, (t: number) => void>()
    feed = new RevocationFeed({
      url: b.broker.http.endpoints.revocationFeed,
      tls: () => ({ ca: pem(ca.certificate), cert: rs.certPem, key: rs.keyPem }),
      onEntry: (e) => {
        const t = Date.now()
        waiting.get(e.value)?.(t)
      },
    })
    await feed.synced
    const arrival = (value: string) =>
      new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no revocation of ${value} at the verifier within 30 s`)), 30_000)
        waiting.set(value, (t) => (clearTimeout(timer), waiting.delete(value), resolve(t)))
      })

    // B's push stream at A exists once A has one stream for B
    for (let i = 0; ; i++) {
      const streams = await brokerAdminCall<{ streams: string[] }>(a.admin, 'POST', '/v1/signals', {
        event: 'credential-compromise',
        subject: `spiffe://${TD}/agents/warmup-${i}`,
      })
      if (streams.streams.length > 0) {
        await arrival(`spiffe://${TD}/agents/warmup-${i}`)
        break
      }
      if (i > 200) throw new Error('B never subscribed at A')
      await new Promise((r) => setTimeout(r, 100))
    }

    const ours: number[] = []
    const base: number[] = []
    for (let i = 0; i < samples; i++) {
      // signal at A → push → policy at B → B's feed → the verifier
      const viaSignal = `spiffe://${TD}/agents/signalled-${i}`
      const got = arrival(viaSignal)
      const t0 = Date.now()
      await brokerAdminCall(a.admin, 'POST', '/v1/signals', { event: 'credential-compromise', subject: viaSignal, reason: 'bench' })
      ours.push((await got) - t0)
      // baseline: the same revocation made at B directly
      const direct = `spiffe://${TD}/agents/direct-${i}`
      const got2 = arrival(direct)
      const t1 = Date.now()
      await brokerAdminCall(b.admin, 'POST', '/v1/revocations', { kind: 'instance', value: direct, reason: 'bench' })
      base.push((await got2) - t1)
      await new Promise((r) => setTimeout(r, 20))
    }
    ours.sort((x, y) => x - y)
    base.sort((x, y) => x - y)
    report('signal_to_refusal_p99_ms', Math.max(1, pct(ours, 99)), Math.max(1, pct(base, 99)), 'ms', {
      samples,
      p50_ms: pct(ours, 50),
      max_ms: ours.at(-1),
      baseline_p50_ms: pct(base, 50),
      delivery: 'push (RFC 8935)',
      what_baseline: "the same instance revocation made directly at the receiver broker's admin socket, to the same verifier",
      load_avg_1m_before: Math.round(load0 * 100) / 100,
      load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
      target_ms: 1000,
    })
  } finally {
    feed?.close()
    for (const b of brokers.reverse()) await b.stop().catch(() => undefined)
    for (const k of kms) await k.close?.()
    rmSync(dir, { recursive: true, force: true })
  }
}
