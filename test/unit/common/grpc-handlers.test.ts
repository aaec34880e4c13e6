import * as grpc from '@grpc/grpc-js'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CALL_CANCELLED, unary, type CallContext } from '../../../src/common/grpc/handlers.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { tempDir } from '../../helpers/temp.js'

const id = (b: Buffer) => b
const method = (name: string) => ({
  path: `/test.T/${name}`,
  requestStream: false,
  responseStream: false,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
  originalName: name,
})

/** unary() over a real grpc-js server on a Unix socket. */
describe('unary handler context', () => {
  let tmp: ReturnType<typeof tempDir>
  let server: grpc.Server
  let client: grpc.Client
  /** Set by each test: the handler body. */
  let body: (req: Buffer, ctx: CallContext<Buffer>) => Promise<Buffer>
  const log = captureLogger()

  beforeEach(async () => {
    tmp = tempDir('gh-')
    server = new grpc.Server()
    const handler = unary<Buffer, Buffer>(log, 'Call', (req, ctx) => body(req, ctx))
    server.addService({ Call: method('Call') }, { Call: handler })
    const addr = `unix:${join(tmp.dir, 's.sock')}`
    await new Promise<void>((res, rej) => server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())))
    client = new grpc.Client(addr, grpc.credentials.createInsecure())
  })
  afterEach(async () => {
    client.close()
    await new Promise<void>((res) => server.tryShutdown(() => res()))
    tmp.cleanup()
  })

  const call = (timeoutMs = 5000) => {
    let cancel = () => {}
    const done = new Promise<Buffer>((res, rej) => {
      const c = client.makeUnaryRequest('/test.T/Call', id, id, Buffer.from('x'), { deadline: Date.now() + timeoutMs }, (e, r) => (e ? rej(e) : res(r!)))
      cancel = () => c.cancel()
    })
    return { done, cancel: () => cancel() }
  }

  it('answers, and its signal (read or not) is not aborted during the call', async () => {
    let aborted: boolean | undefined
    body = async (req, ctx) => {
      aborted = ctx.signal.aborted
      return Buffer.concat([req, req])
    }
    expect((await call().done).toString()).toBe('xx')
    expect(aborted).toBe(false)
  })

  it('a signal first read after the client cancelled is already aborted with the shared reason', async () => {
    let release!: () => void
    const seen = new Promise<AbortSignal>((resolve) => {
      body = async (_req, ctx) => {
        await new Promise<void>((r) => (release = r))
        resolve(ctx.signal)
        return Buffer.alloc(0)
      }
    })
    const c = call()
    await new Promise((r) => setTimeout(r, 50)) // the handler is waiting
    c.cancel()
    await expect(c.done).rejects.toMatchObject({ code: grpc.status.CANCELLED })
    await new Promise((r) => setTimeout(r, 50)) // the server has seen the cancellation
    release()
    const signal = await seen
    expect(signal.aborted).toBe(true)
    expect(signal.reason).toBe(CALL_CANCELLED)
  })

  it('a signal read before the deadline passes aborts when it does', async () => {
    const aborted = new Promise<unknown>((resolve) => {
      body = (_req, ctx) =>
        new Promise<Buffer>((_res, rej) => {
          ctx.signal.addEventListener('abort', () => {
            resolve(ctx.signal.reason)
            rej(new IdentityError('ERR_UNAVAILABLE', 'stopped'))
          })
        })
    })
    await expect(call(100).done).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED })
    expect(await aborted).toBe(CALL_CANCELLED)
  })

  it('maps a typed error to its status', async () => {
    body = async () => {
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'bad thing')
    }
    await expect(call().done).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'bad thing' })
  })
})
