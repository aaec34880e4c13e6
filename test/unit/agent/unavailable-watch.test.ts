import * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import type { InstanceClient, SvidSigner } from '../../../src/agent/manager/ports.js'
import { isServerUnavailable, watchUnavailable } from '../../../src/agent/unavailable-watch.js'
import { IdentityError } from '../../../src/errors/identity-error.js'

const unavailable = () =>
  new IdentityError('ERR_DATASTORE_UNAVAILABLE', 'NewJWTSVID: datastore unavailable', { details: { grpc_code: grpc.status.UNAVAILABLE } })
const denied = () => new IdentityError('ERR_AGENT_EVICTED', 'evicted', { details: { grpc_code: grpc.status.PERMISSION_DENIED } })

function fakeClient(fail: () => Error | undefined) {
  const c = {
    address: '10.0.0.1:8081',
    async batchNewX509Svid() {
      const e = fail()
      if (e) throw e
      return []
    },
    async newJwtSvid() {
      const e = fail()
      if (e) throw e
      return { token: 't', expiresAt: 2, issuedAt: 1 }
    },
    async registerInstance() {
      const e = fail()
      if (e) throw e
      return { instanceId: 'i', spiffeId: 'spiffe://x/y' }
    },
    async endInstance() {
      const e = fail()
      if (e) throw e
    },
    async endAllInstances() {
      const e = fail()
      if (e) throw e
      return 0
    },
  } satisfies SvidSigner & InstanceClient & { address: string }
  return c
}

describe('watchUnavailable', () => {
  it('reports the server of every kind of call answered UNAVAILABLE, and passes the error on', async () => {
    const seen: string[] = []
    const w = watchUnavailable(
      fakeClient(() => unavailable()),
      (a) => seen.push(a),
    )
    const calls = [
      w.batchNewX509Svid([]),
      w.newJwtSvid('e', ['aud']),
      w.registerInstance('e', { pid: 1, startTime: '1' }),
      w.endInstance('i'),
      w.endAllInstances(),
    ]
    for (const c of calls) await expect(c).rejects.toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE' })
    expect(seen).toEqual(Array(5).fill('10.0.0.1:8081'))
  })

  it('reports nothing for a refusal, a success, or a call to a server the agent has already left', async () => {
    const seen: string[] = []
    let err: Error | undefined = denied()
    const client = fakeClient(() => err)
    const w = watchUnavailable(client, (a) => seen.push(a))
    await expect(w.newJwtSvid('e', ['aud'])).rejects.toMatchObject({ code: 'ERR_AGENT_EVICTED' })
    err = undefined
    await expect(w.newJwtSvid('e', ['aud'])).resolves.toMatchObject({ token: 't' })
    // A call sent to A fails after the agent moved to B.
    let release!: () => void
    const late = watchUnavailable(
      {
        ...client,
        get address() {
          return client.address
        },
        newJwtSvid: () =>
          new Promise((_, reject) => {
            release = () => reject(unavailable())
          }),
      },
      (a) => seen.push(a),
    ).newJwtSvid('e', ['aud'])
    client.address = '10.0.0.2:8081'
    release()
    await expect(late).rejects.toMatchObject({ code: 'ERR_DATASTORE_UNAVAILABLE' })
    expect(seen).toEqual([])
  })

  it('tells an unavailable server from other errors', () => {
    expect(isServerUnavailable(unavailable())).toBe(true)
    expect(isServerUnavailable(denied())).toBe(false)
    expect(isServerUnavailable(new Error('x'))).toBe(false)
  })
})
