import * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { directClientConstructor, int64, protoTypes, withDirectCodecs } from '../../../../src/common/grpc/direct-codec.js'
import { loadProto } from '../../../../src/common/grpc/proto.js'

const NODE = 'warrant/agent/v1/node.proto'
const service = (loadProto(NODE) as unknown as { warrant: { agent: { v1: { Node: grpc.ServiceClientConstructor } } } }).warrant.agent.v1.Node.service
const root = protoTypes(NODE)
const leaf = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff)

describe('direct codecs', () => {
  it('put the same bytes on the wire as proto-loader, from wire-typed objects', () => {
    const direct = withDirectCodecs(service, root, ['BatchNewX509SVID'], 'server').BatchNewX509SVID!
    const client = withDirectCodecs(service, root, ['BatchNewX509SVID'], 'client').BatchNewX509SVID!
    const plain = service.BatchNewX509SVID!
    const ok = { code: 0, error_code: '', message: '' }
    const denied = { code: 7, error_code: 'ERR_ID_NOT_AUTHORIZED', message: 'permission denied' }
    const viaLoader = plain.responseSerialize({
      results: [
        { entry_id: 'e1', status: ok, svid_chain: [Buffer.from(leaf), Buffer.from(leaf.subarray(0, 9))], expires_at: '1767225600000' },
        { entry_id: 'e2', status: denied, svid_chain: [], expires_at: '0' },
      ],
    })
    const viaDirect = direct.responseSerialize({
      results: [
        { entry_id: 'e1', status: ok, svid_chain: [leaf, leaf.subarray(0, 9)], expires_at: 1767225600000 },
        { entry_id: 'e2', status: denied, svid_chain: [], expires_at: 0 },
      ],
    })
    expect(Buffer.compare(viaDirect, viaLoader)).toBe(0)
    const req = {
      params: [
        { entry_id: 'e1', csr: leaf, instance_id: '' },
        { entry_id: 'e2', csr: leaf.subarray(3, 7), instance_id: 'i-1' },
      ],
    }
    expect(Buffer.compare(client.requestSerialize(req), plain.requestSerialize({ params: req.params.map((p) => ({ ...p, csr: Buffer.from(p.csr) })) }))).toBe(0)
  })

  it('hand over the decoded message: defaults from the prototype, Longs for int64, an empty array for unset bytes', () => {
    const server = withDirectCodecs(service, root, ['BatchNewX509SVID'], 'server').BatchNewX509SVID!
    const client = withDirectCodecs(service, root, ['BatchNewX509SVID'], 'client').BatchNewX509SVID!
    const plain = service.BatchNewX509SVID!
    const req = server.requestDeserialize(plain.requestSerialize({ params: [{ entry_id: 'e1', csr: Buffer.from(leaf) }, {}] })) as {
      params: { entry_id: string; csr: Uint8Array | unknown[]; instance_id: string }[]
    }
    expect(req.params[0]!.entry_id).toBe('e1')
    expect(Buffer.from(req.params[0]!.csr as Uint8Array).equals(Buffer.from(leaf))).toBe(true)
    expect(req.params[1]!.entry_id).toBe('')
    expect(req.params[1]!.instance_id).toBe('')
    expect(req.params[1]!.csr).not.toBeInstanceOf(Uint8Array)
    expect(req.params[1]!.csr).toHaveLength(0)
    const res = client.responseDeserialize(
      plain.responseSerialize({ results: [{ entry_id: 'e1', svid_chain: [Buffer.from(leaf)], expires_at: '1767225600000' }, {}] }),
    ) as {
      results: { entry_id: string; status: unknown; svid_chain: Uint8Array[]; expires_at: unknown }[]
    }
    expect(int64(res.results[0]!.expires_at)).toBe(1767225600000)
    expect(res.results[0]!.status).toBeNull()
    expect(res.results[1]!.svid_chain).toEqual([])
    expect(int64(res.results[1]!.expires_at)).toBe(0)
  })

  it('leave the other methods to proto-loader, and refuse an unknown method', () => {
    const direct = withDirectCodecs(service, root, ['BatchNewX509SVID'], 'server')
    expect(direct.NewJWTSVID).toBe(service.NewJWTSVID)
    expect(() => withDirectCodecs(service, root, ['NoSuchMethod'], 'server')).toThrow(/no method NoSuchMethod/)
    expect(typeof directClientConstructor(service, root, ['BatchNewX509SVID'], 'warrant.agent.v1.Node')).toBe('function')
  })

  it('int64 reads numbers and Longs, and is 0 for anything else', () => {
    expect(int64(42)).toBe(42)
    expect(int64(Number.NaN)).toBe(0)
    expect(int64({ toNumber: () => 7 })).toBe(7)
    expect(int64('12')).toBe(0)
    expect(int64(null)).toBe(0)
  })
})
