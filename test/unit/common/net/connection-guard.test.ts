import { EventEmitter } from 'node:events'
import type net from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { ConnectionLimitsSchema, toConnectionLimits } from '../../../../src/common/config/connection-limits.js'
import { ConnectionGuard, DEFAULT_WORKLOAD_API_LIMITS } from '../../../../src/common/net/connection-guard.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { agentNodeAttestors, workloadAttestors } from '../../../../attestors/index.js'
import { parseAgentConfig } from '../../../../src/agent/config.js'
import { parseToml } from '../../../../src/common/config/toml.js'
import { keyManagerPlugins } from '../../../../src/keymanager/index.js'
import { serverPlugins } from '../../../../src/cli/plugins.js'
import { toServerConfig } from '../../../../src/server/config.js'

/** Just enough of a net.Socket for admission: events, destroy(), bytesRead. */
class FakeSocket extends EventEmitter {
  destroyed = false
  bytesRead = 0
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true
      queueMicrotask(() => this.emit('close'))
    }
    return this
  }
}
const sock = () => new FakeSocket() as unknown as net.Socket & FakeSocket

const guards: ConnectionGuard[] = []
function guard(o: Partial<ConstructorParameters<typeof ConnectionGuard>[0]> = {}) {
  const g = new ConnectionGuard({ ...DEFAULT_WORKLOAD_API_LIMITS, listener: 'test', peerKind: 'uid', log: captureLogger(), ...o })
  guards.push(g)
  return g
}
afterEach(() => {
  for (const g of guards.splice(0)) g.close()
})

const total = async (r: Registry, name: string) => (await r.getSingleMetric(name)!.get()).values.reduce((a, v) => a + v.value, 0)

describe('ConnectionGuard', () => {
  it('refuses limits that are not positive integers (RangeError)', () => {
    for (const bad of [{ maxPerPeer: 0 }, { graceMs: -1 }, { idleTimeoutMs: 1.5 }, { handshakeTimeoutMs: Number.NaN }]) {
      expect(() => guard(bad)).toThrow(RangeError)
    }
  })

  it('admits up to maxPerPeer per key, refuses (destroys) the rest, counts and logs once per interval; other keys are unaffected', async () => {
    const registry = new Registry()
    const log = captureLogger()
    const g = guard({ maxPerPeer: 2, registry, log })
    const a = [sock(), sock(), sock(), sock()]
    expect(a.map((s) => g.admit(s, '1000'))).toEqual([true, true, false, false])
    expect(a.map((s) => s.destroyed)).toEqual([false, false, true, true])
    expect(g.admit(sock(), '0')).toBe(true)
    expect([g.countFor('1000'), g.countFor('0'), g.size]).toEqual([2, 1, 3])
    expect(await total(registry, 'warrant_connections_rejected_total')).toBe(2)
    expect(await total(registry, 'warrant_connections_open')).toBe(3)
    const lines = log.lines.filter((l) => l.msg === 'Connection limit per peer reached; refusing connections')
    expect(lines).toHaveLength(1)
    expect(lines[0]!.fields).toMatchObject({ uid: 1000, limit: 2 })
    // A closed connection frees its slot.
    a[0]!.destroy()
    await new Promise((r) => setImmediate(r))
    expect(g.countFor('1000')).toBe(1)
    expect(g.admit(sock(), '1000')).toBe(true)
  })

  it('destroys a connection that does not finish its handshake in time', async () => {
    const g = guard({ handshakeTimeoutMs: 50 })
    const s = sock()
    expect(g.admit(s, '1')).toBe(true)
    await new Promise((r) => s.once('close', r))
    expect(g.size).toBe(0)
  })

  it('close() destroys every connection and refuses new ones', async () => {
    const g = guard()
    const s = sock()
    g.admit(s, '1')
    g.close()
    expect(s.destroyed).toBe(true)
    const t = sock()
    expect(g.admit(t, '1')).toBe(false)
    expect(t.destroyed).toBe(true)
  })

  it('createInjector fails loudly when grpc-js no longer has the internals it watches', () => {
    const g = guard()
    const fake = { createConnectionInjector: () => ({ injectConnection() {}, drain() {}, destroy() {} }) } as unknown as grpc.Server
    expect(() => g.createInjector(fake, grpc.ServerCredentials.createInsecure())).toThrow(TypeError)
    // The real grpc-js: found.
    const real = new grpc.Server()
    expect(() => g.createInjector(real, grpc.ServerCredentials.createInsecure())).not.toThrow()
    real.forceShutdown()
  })
})

describe('connection_limits config', () => {
  it('parses durations and counts; unknown keys and non-positive values are errors', () => {
    const ok = ConnectionLimitsSchema.parse({ max_per_peer: 10, handshake_timeout: '2s', idle_timeout: '1m', grace: 0.5 })
    expect(toConnectionLimits(ok)).toEqual({ maxPerPeer: 10, handshakeTimeoutMs: 2000, idleTimeoutMs: 60_000, graceMs: 500 })
    expect(toConnectionLimits(undefined)).toEqual({})
    expect(ConnectionLimitsSchema.safeParse({ max_conns: 1 }).success).toBe(false)
    expect(ConnectionLimitsSchema.safeParse({ max_per_peer: 0 }).success).toBe(false)
    expect(ConnectionLimitsSchema.safeParse({ grace: '0s' }).success).toBe(false)
    expect(ConnectionLimitsSchema.safeParse({ idle_timeout: 'soon' }).success).toBe(false)
  })
})

describe('[agent.connection_limits] and [server.connection_limits]', () => {
  const agentToml = (extra: string) => `
[agent]
trust_domain = "example.org"
server_address = "127.0.0.1:8081"
socket_path = "run/api.sock"
data_dir = "/var/lib/warrant"
trust_bundle_path = "bundle.pem"
${extra}
[plugins.node_attestor.join_token]
token = "abc"
[plugins.workload_attestor.unix]
`
  const agent = (extra: string) =>
    parseAgentConfig(parseToml(agentToml(extra)), {
      baseDir: '/etc/warrant',
      plugins: { nodeAttestors: agentNodeAttestors, workloadAttestors, keyManagers: keyManagerPlugins },
    })

  it('agent: absent means defaults; set keys reach the config; unknown keys are ERR_CONFIG_INVALID', () => {
    expect(agent('').connectionLimits).toEqual({})
    expect(agent('[agent.connection_limits]\nmax_per_peer = 64\nidle_timeout = "30s"').connectionLimits).toEqual({ maxPerPeer: 64, idleTimeoutMs: 30_000 })
    expect(() => agent('[agent.connection_limits]\nmax_per_uid = 64')).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })

  it('server: set keys reach the config; unknown keys are ERR_CONFIG_INVALID', () => {
    const raw = (limits: Record<string, unknown> | undefined) => ({
      server: { trust_domain: 'example.org', data_dir: '/tmp/wsrv', ...(limits ? { connection_limits: limits } : {}) },
    })
    expect(toServerConfig(raw(undefined), '/tmp', serverPlugins).connectionLimits).toEqual({})
    expect(toServerConfig(raw({ max_per_peer: 5, handshake_timeout: '3s' }), '/tmp', serverPlugins).connectionLimits).toEqual({
      maxPerPeer: 5,
      handshakeTimeoutMs: 3000,
    })
    expect(() => toServerConfig(raw({ per_address: 5 }), '/tmp', serverPlugins)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })
})
