/**
 * A server with an agent connected (an open Sync stream on a guarded TLS
 * connection) stops on SIGTERM: it stops accepting, gives calls in flight the
 * grace period, then closes what is left, and exits 0. The listener used to
 * wait for its connections to end before the gRPC server shut them down, so
 * the process hung until it was killed.
 */
import { join } from 'node:path'
import { afterAll, expect, it } from 'vitest'
import { E2eAgent, E2eServer } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const tmp = tempDir('wss-')
afterAll(() => tmp.cleanup())

it('SIGTERM with an agent connected: the server exits 0 within its grace period', async () => {
  const server = await E2eServer.start({ dir: join(tmp.dir, 's'), trustDomain: 'example.org' })
  const agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
  try {
    await agent.attested()
    const t = Date.now()
    // WarrantProcess.stop sends SIGKILL after 30 s; the grace period for calls in flight is 5 s.
    const st = await server.proc!.stop('SIGTERM', 30_000)
    expect(st, server.output().slice(-2000)).toEqual({ code: 0, signal: null })
    expect(Date.now() - t).toBeLessThan(25_000)
    expect(server.output()).toContain('Server stopping')
  } finally {
    await agent.stop()
    await server.stop()
  }
}, 120_000)
