import * as grpc from '@grpc/grpc-js'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { run } from '../../src/cli/commands/bounds.js'
import { loadProto } from '../../src/common/grpc/proto.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { boundsAdminService } from '../../src/server/bounds/admin-service.js'
import { BoundsService } from '../../src/server/bounds/bounds-service.js'
import { createMemoryDataStore } from '../../src/server/datastore/memory/index.js'
import { BOUNDS_DOCUMENT_TYPE, BoundsSet, verifyBoundsDocument } from '../../src/spiffe/bounds/index.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { FakeClock } from '../helpers/fake-clock.js'
import { tempDir } from '../helpers/temp.js'
import { caWithJwtSigner } from '../unit/server/bounds/helpers.js'

const td = TrustDomain.fromString('corp.example')

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  let out = ''
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString()
    return true
  })
  try {
    return { code: await run(args), out }
  } finally {
    spy.mockRestore()
  }
}

/** The gRPC error a CLI call failed with: status, x-error-code and details. */
async function failure(args: string[]): Promise<{ status: number; code: string; details: string }> {
  try {
    await cli(args)
  } catch (err) {
    const e = err as grpc.ServiceError
    return { status: e.code, code: String(e.metadata?.get('x-error-code')[0] ?? (err as { code: string }).code), details: e.details ?? (err as Error).message }
  }
  throw new Error('expected the command to fail')
}

describe('warrant bounds CLI over the admin socket', () => {
  const tmp = tempDir('w-bnd-')
  const socket = join(tmp.dir, 'admin.sock')
  const ds = createMemoryDataStore()
  const clock = new FakeClock()
  const server = new grpc.Server()
  let svc: BoundsService
  let ca: Awaited<ReturnType<typeof caWithJwtSigner>>['ca']

  beforeAll(async () => {
    const c = await caWithJwtSigner(td, ds, clock)
    ca = c.ca
    svc = new BoundsService({
      trustDomain: td,
      ds,
      config: BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 3600 } }),
      clock,
      log: nullLogger,
      jwtSigner: c.jwtSigner,
    })
    await svc.init()
    const def = (loadProto('warrant/admin/v1/bounds.proto') as unknown as { warrant: { admin: { v1: { Bounds: grpc.ServiceClientConstructor } } } }).warrant
      .admin.v1.Bounds
    server.addService(def.service, boundsAdminService({ bounds: svc, log: nullLogger }))
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    )
  })
  afterAll(() => {
    server.forceShutdown()
    tmp.cleanup()
  })

  it('set → show → show --signed → list → delete', async () => {
    const set = await cli([
      'set',
      '--socket',
      socket,
      '--output',
      'json',
      '--prefix',
      '/agents/payments',
      '--x509-svid-ttl',
      '15m',
      '--jwt-svid-ttl',
      '5m',
      '--audience',
      'spiffe://corp.example/svc/payments-api',
      '--audience',
      'https://payments.corp.example',
      '--no-dns',
      '--federates-with',
      'partner.example',
      '--max-instances',
      '50',
      '--require-node-selector',
      'tpm:pcr_policy:prod',
    ])
    expect(set.code).toBe(0)
    const declared = {
      x509_svid_ttl: 900,
      jwt_svid_ttl: 300,
      jwt_audiences: ['https://payments.corp.example', 'spiffe://corp.example/svc/payments-api'],
      dns_suffixes: [],
      federates_with: ['partner.example'],
      max_instances: 50,
      require_node_selectors: ['tpm:pcr_policy:prod'],
    }
    expect(JSON.parse(set.out)).toMatchObject({
      prefix: '/agents/payments',
      source: 'api',
      declared,
      effective: declared,
      effective_from: ['/agents', '/agents/payments'],
    })

    const child = await cli(['set', '--socket', socket, '--prefix', '/agents/payments/refunds', '--jwt-svid-ttl', '60s'])
    expect(child.code).toBe(0)
    expect(child.out).toContain('JWT-SVID TTL       <= 1m')

    const show = await cli(['show', '--socket', socket, '--prefix', '/agents/payments/refunds/bot-1', '--output', 'json'])
    expect(JSON.parse(show.out)).toMatchObject({
      declared: null,
      source: null,
      effective: { jwt_svid_ttl: 60, x509_svid_ttl: 900, max_instances: 50 },
      effective_from: ['/agents', '/agents/payments', '/agents/payments/refunds'],
    })

    const signed = await cli(['show', '--socket', socket, '--signed', '--output', 'json'])
    const s = JSON.parse(signed.out) as { document: string; sequence: number; kid: string; trust_domain: string }
    expect(JSON.parse(Buffer.from(s.document.split('.')[0]!, 'base64url').toString())).toMatchObject({ typ: BOUNDS_DOCUMENT_TYPE, kid: s.kid })
    const doc = await verifyBoundsDocument(s.document, ca.bundle(), { trustDomain: td })
    expect(doc.sequence).toBe(s.sequence)
    expect(doc.set.prefixes()).toEqual(['/agents', '/agents/payments', '/agents/payments/refunds'])
    const raw = await cli(['show', '--socket', socket, '--signed'])
    expect(raw.out.trim()).toBe(s.document)

    const list = await cli(['list', '--socket', socket, '--output', 'json'])
    expect((JSON.parse(list.out) as { bounds: { prefix: string; source: string }[] }).bounds.map((b) => [b.prefix, b.source])).toEqual([
      ['/agents', 'config'],
      ['/agents/payments', 'api'],
      ['/agents/payments/refunds', 'api'],
    ])

    expect((await cli(['delete', '--socket', socket, '--prefix', '/agents/payments/refunds'])).code).toBe(0)
    expect(svc.get('/agents/payments/refunds')).toBeUndefined()
    expect(await failure(['delete', '--socket', socket, '--prefix', '/agents/payments/refunds'])).toMatchObject({
      status: grpc.status.NOT_FOUND,
      code: 'ERR_NOT_FOUND',
    })
  })

  it.each([
    [
      'a child that widens its parent',
      ['--prefix', '/agents/payments/x', '--jwt-svid-ttl', '10m'],
      '/agents/payments/x.jwt_svid_ttl: widens ancestor "/agents/payments"',
    ],
    [
      'a parent that a child would exceed',
      ['--prefix', '/agents/payments', '--x509-svid-ttl', '15m', '--max-instances', '10', '--jwt-svid-ttl', '30s'],
      'widens ancestor',
    ],
    ['a config prefix', ['--prefix', '/agents', '--x509-svid-ttl', '1m'], 'declared in the server configuration'],
    ['a bad selector', ['--prefix', '/agents/q', '--require-node-selector', 'prod'], '/agents/q.require_node_selectors.0'],
    ['a bad trust domain', ['--prefix', '/agents/q', '--federates-with', 'Not A TD'], '/agents/q.federates_with.0'],
  ])('refuses %s with its path and reason, storing nothing', async (_t, args, msg) => {
    await cli(['set', '--socket', socket, '--prefix', '/agents/payments', '--jwt-svid-ttl', '5m'])
    await cli(['set', '--socket', socket, '--prefix', '/agents/payments/keep', '--jwt-svid-ttl', '1m'])
    const before = svc.current().toJSON()
    const seq = svc.sequence
    const f = await failure(['set', '--socket', socket, ...args])
    expect(f).toMatchObject({ status: grpc.status.INVALID_ARGUMENT, code: 'ERR_BOUNDS_INVALID' })
    expect(f.details).toContain(msg)
    expect(svc.current().toJSON()).toEqual(before)
    expect(svc.sequence).toBe(seq)
  })

  it.each([
    ['an unknown flag', ['set', '--prefix', '/a', '--ttl', '5m']],
    ['--no-dns with --dns-suffix', ['set', '--prefix', '/a', '--no-dns', '--dns-suffix', 'x.example']],
    ['a fractional TTL', ['set', '--prefix', '/a', '--jwt-svid-ttl', '1500ms']],
    ['a missing prefix', ['show']],
  ])('refuses %s before calling the server', async (_t, args) => {
    expect(await failure([...args, '--socket', socket])).toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })

  it('prints usage for an unknown command', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    try {
      expect(await run(['frobnicate'])).toBe(2)
    } finally {
      spy.mockRestore()
    }
  })
})
