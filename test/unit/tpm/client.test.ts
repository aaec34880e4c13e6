import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { TpmClient } from '../../../src/tpm/client.js'
import { TPM_RC, TpmError } from '../../../src/tpm/errors.js'
import { TpmWriter } from '../../../src/tpm/marshal.js'
import { TPM_ALG, TPM_PT } from '../../../src/tpm/structures.js'
import type { TpmTransport } from '../../../src/tpm/transport.js'

/** A scripted transport: answers each command with the next response. */
class FakeTransport implements TpmTransport {
  readonly sent: Uint8Array[] = []
  readonly answers: Array<Uint8Array | ((cmd: Uint8Array) => Uint8Array)>
  constructor(answers: Array<Uint8Array | ((cmd: Uint8Array) => Uint8Array)>) {
    this.answers = answers
  }
  async send(cmd: Uint8Array): Promise<Uint8Array> {
    this.sent.push(cmd)
    const a = this.answers.shift()
    if (a === undefined) throw new Error('unexpected command')
    return typeof a === 'function' ? a(cmd) : a
  }
  async close(): Promise<void> {}
}

function response(rc: number, params: Uint8Array = new Uint8Array(0), tag = 0x8001): Uint8Array {
  const w = new TpmWriter().u16(tag).u32(0).u32(rc).bytes(params)
  w.patchU32(2, w.length)
  return w.finish()
}

function propertyResponse(prop: number, value: number): Uint8Array {
  return response(0, new TpmWriter().u8(0).u32(6).u32(1).u32(prop).u32(value).finish())
}

describe('TpmClient with a scripted transport', () => {
  it('retries TPM_RC_RETRY then succeeds', async () => {
    const t = new FakeTransport([response(TPM_RC.RETRY), response(TPM_RC.YIELDED), propertyResponse(TPM_PT.NV_BUFFER_MAX, 512)])
    const c = new TpmClient(t, { retryDelayMs: 0 })
    expect(await c.getProperty(TPM_PT.NV_BUFFER_MAX)).toBe(512)
    expect(t.sent).toHaveLength(3)
    expect(Buffer.from(t.sent[0]!).toString('hex')).toBe('80010000001600000' + '17a' + '00000006' + '0000012c' + '00000001')
  })

  it('gives up after the retry budget with a TpmError', async () => {
    const c = new TpmClient(new FakeTransport([response(TPM_RC.RETRY), response(TPM_RC.RETRY)]), { retries: 1, retryDelayMs: 0 })
    await expect(c.getProperty(TPM_PT.NV_BUFFER_MAX)).rejects.toMatchObject({ code: 'ERR_TPM', rc: TPM_RC.RETRY, command: 'GetCapability' })
  })

  it.each([
    [
      'size field mismatch',
      (() => {
        const r = response(0, new Uint8Array(1))
        r[5] = 0xff
        return r
      })(),
    ],
    ['trailing parameter bytes', response(0, new TpmWriter().u8(0).u32(6).u32(0).u8(9).finish())],
    ['wrong capability', response(0, new TpmWriter().u8(0).u32(1).u32(0).finish())],
    ['truncated header', new Uint8Array([0x80, 0x01, 0, 0])],
    ['wrong tag', response(0, new TpmWriter().u8(0).u32(6).u32(0).finish(), 0x8002)],
  ])('rejects a response with %s as ERR_TPM_PAYLOAD_INVALID', async (_n, resp) => {
    const c = new TpmClient(new FakeTransport([resp]))
    await expect(c.getCapability(6, 0x100, 1)).rejects.toMatchObject({ code: 'ERR_TPM_PAYLOAD_INVALID' })
  })

  it('pcrRead loops while the TPM returns partial selections', async () => {
    // answer only the lowest selected PCR each time
    const answer = (cmd: Uint8Array): Uint8Array => {
      const sel = cmd.subarray(10)
      const bitmap = sel.subarray(7, 10)
      let first = -1
      for (let i = 0; i < 24 && first < 0; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) first = i
      const out = new Uint8Array(3)
      out[first >> 3] = 1 << (first & 7)
      const w = new TpmWriter().u32(7).u32(1).u16(TPM_ALG.SHA256).u8(3).bytes(out).u32(1).tpm2b(new Uint8Array(32).fill(first))
      return response(0, w.finish())
    }
    const c = new TpmClient(new FakeTransport([answer, answer, answer]))
    const { updateCounter, values } = await c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [23, 1, 16] }])
    expect(updateCounter).toBe(7)
    expect(values.map((v) => [v.pcr, v.digest[0]])).toEqual([
      [1, 1],
      [16, 16],
      [23, 23],
    ])
  })

  it('startup maps TPM_RC_INITIALIZE to success but not other codes', async () => {
    await new TpmClient(new FakeTransport([response(TPM_RC.INITIALIZE)])).startup()
    await expect(new TpmClient(new FakeTransport([response(TPM_RC.FAILURE)])).startup()).rejects.toBeInstanceOf(TpmError)
  })

  it('withFlush flushes on success and on failure', async () => {
    const t = new FakeTransport([response(0), response(0)])
    const c = new TpmClient(t)
    expect(await c.withFlush({ handle: 0x80000001 }, async () => 5)).toBe(5)
    await expect(
      c.withFlush({ handle: 0x80000002 }, async () => {
        throw new RangeError('x')
      }),
    ).rejects.toBeInstanceOf(RangeError)
    expect(t.sent.map((s) => Buffer.from(s).toString('hex'))).toEqual(['80010000000e0000016580000001', '80010000000e0000016580000002'])
  })

  it('fuzz: random response bodies only produce IdentityError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 4 }), async (body, which) => {
        const c = new TpmClient(new FakeTransport([response(0, body), response(0), response(0)]))
        const calls = [
          () => c.getCapability(6, 0x100, 8),
          () => c.readPublic(0x81010001),
          () => c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [0, 1] }]),
          () => c.nvReadPublic(0x01c00002),
          () => c.startAuthSession('policy'),
        ]
        try {
          await calls[which]!()
        } catch (err) {
          expect(err).toBeInstanceOf(IdentityError)
        }
      }),
      { numRuns: 1000 },
    )
  })
})
