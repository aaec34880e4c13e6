import { createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { DeviceTransport, SwtpmTcpTransport, openTransport, type SwtpmFraming } from '../../../src/tpm/transport.js'
import { fromHex, toHex } from '../../../src/tpm/marshal.js'

const CMD = fromHex('80010000000c0000017a0006') // 12 bytes, a well-formed header
function resp(tagByte: number): Uint8Array {
  return fromHex(`80010000000c00000000${tagByte.toString(16).padStart(2, '0')}00`)
}

/** A fake TPM: records each connection's bytes and answers through `answer`. */
async function fakeTpm(answer: (sock: Socket, received: Buffer) => void): Promise<{ server: Server; port: number; chunks: Buffer[] }> {
  const chunks: Buffer[] = []
  const server = createServer((sock) => {
    let buf = Buffer.alloc(0)
    sock.on('data', (d) => {
      chunks.push(d)
      buf = Buffer.concat([buf, d])
      answer(sock, buf)
      buf = Buffer.alloc(0)
    })
    sock.on('error', () => undefined)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const addr = server.address()
  return { server, port: typeof addr === 'object' && addr !== null ? addr.port : 0, chunks }
}

let servers: Server[] = []
afterEach(async () => {
  for (const s of servers) await new Promise((r) => s.close(r))
  servers = []
})

describe('SwtpmTcpTransport framing', () => {
  it.each<[SwtpmFraming, string, (r: Uint8Array) => Buffer]>([
    ['raw', toHex(CMD), (r) => Buffer.from(r)],
    ['mssim', '00000008' + '00' + '0000000c' + toHex(CMD), (r) => Buffer.concat([Buffer.from([0, 0, 0, r.length]), Buffer.from(r), Buffer.alloc(4)])],
  ])('%s: one write per command, responses reassembled from fragments, queued in order', async (framing, wantHex, frame) => {
    let n = 0
    const fake = await fakeTpm((sock) => {
      const out = frame(resp(++n))
      // answer in three fragments to exercise reassembly
      sock.write(out.subarray(0, 3))
      setImmediate(() => {
        sock.write(out.subarray(3, 7))
        setImmediate(() => sock.write(out.subarray(7)))
      })
    })
    servers.push(fake.server)
    const t = new SwtpmTcpTransport({ port: fake.port, framing })
    const [a, b, c] = await Promise.all([t.send(CMD), t.send(CMD), t.send(CMD)])
    expect([a[10], b[10], c[10]]).toEqual([1, 2, 3])
    expect(fake.chunks.map((c) => c.toString('hex'))).toEqual([wantHex, wantHex, wantHex])
    await t.close()
  })

  it('times out with ERR_TPM_TRANSPORT and reconnects for the next command', async () => {
    let calls = 0
    const fake = await fakeTpm((sock) => {
      if (++calls > 1) sock.write(Buffer.from(resp(9)))
    })
    servers.push(fake.server)
    const t = new SwtpmTcpTransport({ port: fake.port, framing: 'raw', timeoutMs: 100 })
    await expect(t.send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
    expect((await t.send(CMD))[10]).toBe(9)
    await t.close()
  })

  it('rejects on abort, on a closed connection, on a bad size and on a closed transport', async () => {
    const fake = await fakeTpm((sock, got) => {
      if (got.length === CMD.length) sock.end()
      else sock.write(Buffer.from('00000002', 'hex'))
    })
    servers.push(fake.server)
    const ac = new AbortController()
    ac.abort()
    const t = new SwtpmTcpTransport({ port: fake.port, framing: 'raw' })
    await expect(t.send(CMD, { signal: ac.signal })).rejects.toBeDefined()
    await expect(t.send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
    const m = new SwtpmTcpTransport({ port: fake.port, framing: 'mssim' })
    await expect(m.send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
    await t.close()
    await m.close()
    await expect(t.send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
  })

  it('fails to connect with ERR_TPM_TRANSPORT', async () => {
    const fake = await fakeTpm(() => undefined)
    const port = fake.port
    await new Promise((r) => fake.server.close(r))
    await expect(new SwtpmTcpTransport({ port }).send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
  })

  it('rejects malformed commands with RangeError', async () => {
    const t = new SwtpmTcpTransport({ port: 1 })
    expect(() => t.send(fromHex('8001'))).toThrow(RangeError)
    expect(() => t.send(fromHex('8001000000ff00000000'))).toThrow(RangeError)
  })
})

describe('DeviceTransport', () => {
  it('a missing device gives ERR_TPM_TRANSPORT', async () => {
    const t = new DeviceTransport('/nonexistent/tpmrm0')
    await expect(t.send(CMD)).rejects.toMatchObject({ code: 'ERR_TPM_TRANSPORT' })
    await t.close()
  })
})

describe('openTransport', () => {
  it.each([
    ['device:/dev/tpmrm0', { path: '/dev/tpmrm0' }],
    ['swtpm:127.0.0.1:2321', { host: '127.0.0.1', port: 2321, framing: 'mssim' }],
    ['swtpm:localhost:2321?framing=raw', { host: 'localhost', port: 2321, framing: 'raw' }],
    ['swtpm:[::1]:2321', { host: '::1', port: 2321 }],
  ])('%s', (uri, want) => {
    expect(openTransport(uri)).toMatchObject(want)
  })
  it.each(['tcp:1.2.3.4:5', 'swtpm:host', 'swtpm::2321', 'swtpm:h:99999', 'swtpm:h:1?framing=x', 'device:relative'])('rejects %s', (uri) => {
    expect(() => openTransport(uri)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })
})
