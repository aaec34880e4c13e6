/**
 * The broker of bench/gateway.ts, as bench/broker.ts composes it (startBroker,
 * its signing key in the given key manager, audit on, the gateway's SPIFFE ID
 * in `txn_token_requesters`, the ceilings from `bounds`): `composeGatewayBenchBroker`
 * in the bench's process (`--broker-in-process`), or this file as a process
 * of its own (the default, as deployed: the broker runs in the server, the
 * gateway in `warrant gateway run`, each with its own event loop).
 *
 * As a process: `node --import tsx bench/_gateway-broker.ts '<json BrokerParams>'`;
 * prints `{"ready":true}` once it listens, stops when stdin closes.
 */
import { openSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { toEmbeddedBrokerConfig } from '../src/broker/config.js'
import { createBrokerKeyManager, startBroker } from '../src/cli/broker-composition.js'
import { createLogger } from '../src/cli/logging.js'
import { BoundsSet } from '../src/spiffe/bounds/bounds-set.js'
import { BundleSet } from '../src/spiffe/bundle/bundle-set.js'
import { SpiffeBundle } from '../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'

export interface BrokerParams {
  dir: string
  trustDomain: string
  /** The CA certificate (DER, base64) and the JWT authority. */
  caDerB64: string
  jwtKid: string
  jwk: Record<string, unknown>
  cert: string
  key: string
  port: number
  issuer: string
  keyManager: Record<string, unknown>
  gateway: string
  bounds: Record<string, unknown>
}

export async function composeGatewayBenchBroker(p: BrokerParams): Promise<{ stop(): Promise<void> }> {
  const td = TrustDomain.fromString(p.trustDomain)
  const bundles = new BundleSet([
    SpiffeBundle.from({ trustDomain: td, x509Authorities: [Buffer.from(p.caDerB64, 'base64')], jwtAuthorities: new Map([[p.jwtKid, p.jwk]]) }),
  ])
  const config = toEmbeddedBrokerConfig(
    {
      issuer: p.issuer,
      bind_address: `127.0.0.1:${p.port}`,
      key_manager: p.keyManager,
      admin_socket_path: `${p.dir}/admin.sock`,
      txn_token_requesters: [p.gateway],
    },
    p.dir,
    p.dir,
  )!
  const bounds = BoundsSet.parse(td, p.bounds)
  const log = createLogger({ name: 'warrant-gateway-bench-broker', level: 'info', destination: openSync('/dev/null', 'w') })
  const km = await createBrokerKeyManager(config.keyManager!, { log, trustDomain: td, dataDir: p.dir })
  const broker = await startBroker({
    config,
    keyManager: km,
    trust: { localTrustDomain: () => td, bundles: () => bundles, version: () => bundles },
    jwtBundles: bundles,
    identity: { current: () => ({ certChainPem: p.cert, keyPem: p.key }), onChange: () => () => undefined },
    bounds: () => bounds,
    log,
  })
  return {
    async stop() {
      await broker.stop()
      await km.close?.()
    },
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const p = JSON.parse(process.argv[2] ?? '{}') as BrokerParams
  const b = await composeGatewayBenchBroker(p)
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
  process.stdin.resume()
  process.stdin.on('end', () => void b.stop().then(() => process.exit(0)))
}
