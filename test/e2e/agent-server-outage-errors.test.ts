/**
 * What a workload learns when the agent cannot reach its server: with real
 * `warrant server run` and `warrant agent run` processes, the server is
 * stopped and a workload asks for a JWT-SVID with an audience the agent has
 * not cached. The workload gets UNAVAILABLE with a fixed message (no server
 * address, port or socket error); the agent's log keeps the detail.
 */
import * as grpc from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { securityHeader, workloadClient } from '../../src/cli/commands/api.js'
import { E2eAgent, E2eServer, waitFor } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'outage.example'
const uid = process.getuid?.() ?? 0
const WORKLOAD_ID = `spiffe://${TD}/agents/outage`

function fetchJwt(socketPath: string, audience: string): Promise<{ svids: { spiffe_id: string; svid: string }[] }> {
  const client = workloadClient(`unix:${socketPath}`)
  return new Promise<{ svids: { spiffe_id: string; svid: string }[] }>((resolve, reject) => {
    ;(
      client as unknown as {
        FetchJWTSVID: (
          r: unknown,
          md: grpc.Metadata,
          o: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null, r: { svids: { spiffe_id: string; svid: string }[] }) => void,
        ) => void
      }
    ).FetchJWTSVID({ audience: [audience], spiffe_id: '' }, securityHeader(), { deadline: Date.now() + 60_000 }, (err, res) =>
      err ? reject(err) : resolve(res),
    )
  }).finally(() => client.close())
}

describe('agent e2e: a server outage seen from a workload', () => {
  const tmp = tempDir('wo-')
  let server: E2eServer
  let agent: E2eAgent

  beforeAll(async () => {
    server = await E2eServer.start({ dir: `${tmp.dir}/s`, trustDomain: TD })
    agent = E2eAgent.start({ dir: `${tmp.dir}/a`, server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    await server.cliJson(['entry', 'create', '--spiffe-id', WORKLOAD_ID, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
    // The entry has reached the agent once a JWT-SVID is served for it.
    await waitFor(
      'a JWT-SVID for the workload',
      async () => (await fetchJwt(agent.socketPath, 'https://before.example')).svids.some((s) => s.spiffe_id === WORKLOAD_ID),
      { timeoutMs: 45_000, hint: () => agent.output() },
    )
  }, 120_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('a new audience during the outage is UNAVAILABLE "service unavailable", without the server address; the agent log has it', async () => {
    const [host, port] = [server.address.slice(0, server.address.lastIndexOf(':')), server.address.slice(server.address.lastIndexOf(':') + 1)]
    await server.stop('SIGKILL')
    const err = await fetchJwt(agent.socketPath, 'https://during-outage.example').then(
      () => {
        throw new Error('expected FetchJWTSVID to fail while the server is down')
      },
      (e: grpc.ServiceError) => e,
    )
    expect(err.code, err.details).toBe(grpc.status.UNAVAILABLE)
    expect(err.details).toBe('service unavailable')
    expect(err.metadata.get('x-error-code')).toEqual(['ERR_UNAVAILABLE'])
    const seen = JSON.stringify([err.message, err.details, err.metadata.toJSON()])
    for (const leak of [port, `${host}:${port}`, 'ECONNREFUSED', 'No connection established', 'NewJWTSVID']) expect(seen).not.toContain(leak)
    // The operator still has the reason, with the address, in the agent's log.
    await waitFor(
      'the agent to log the failure with its detail',
      () =>
        agent
          .output()
          .split('\n')
          .some((l) => l.includes('ERR_UNAVAILABLE') && l.includes(port) && /ECONNREFUSED|No connection established/.test(l)),
      { timeoutMs: 20_000, hint: () => agent.output() },
    )
  })
})
