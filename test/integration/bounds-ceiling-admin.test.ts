import * as grpc from '@grpc/grpc-js'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { run } from '../../src/cli/commands/bounds.js'
import { loadProto } from '../../src/common/grpc/proto.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { boundsAdminService } from '../../src/server/bounds/admin-service.js'
import { BoundsService } from '../../src/server/bounds/bounds-service.js'
import { createMemoryDataStore } from '../../src/server/datastore/memory/index.js'
import { BoundsSet, ceilingFor, verifyBoundsDocument } from '../../src/spiffe/bounds/index.js'
import { SpiffeId } from '../../src/spiffe/spiffe-id.js'
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

describe('broker ceilings in bounds over the admin socket and the CLI', () => {
  const tmp = tempDir('w-bcl-')
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
      config: BoundsSet.parse(td, { '/agents': { scopes: ['read', 'write'], max_renewals: 5 } }),
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

  it('sets, shows and signs every ceiling field', async () => {
    const set = await cli([
      'set',
      '--socket',
      socket,
      '--output',
      'json',
      '--prefix',
      '/agents/payments',
      '--scope',
      'read',
      '--resource',
      'https://api.corp.example',
      '--max-token-ttl',
      '10m',
      '--max-renewals',
      '3',
      '--max-delegation-depth',
      '2',
      '--may-delegate-to',
      'spiffe://corp.example/agents/payments/',
      '--deny-bearer',
    ])
    expect(set.code).toBe(0)
    const declared = {
      scopes: ['read'],
      resources: ['https://api.corp.example'],
      max_token_ttl: 600,
      max_renewals: 3,
      max_delegation_depth: 2,
      may_delegate_to: ['spiffe://corp.example/agents/payments/'],
      allow_bearer: false,
    }
    expect(JSON.parse(set.out)).toMatchObject({ declared, effective: declared })
    const text = await cli(['show', '--socket', socket, '--prefix', '/agents/payments'])
    for (const l of [
      'Token scopes       read',
      'Token TTL          <= 10m',
      'Max renewals       3',
      'Delegation depth   <= 2',
      'Bearer tokens      not allowed',
    ])
      expect(text.out).toContain(l)
    const signed = JSON.parse((await cli(['show', '--socket', socket, '--signed', '--output', 'json'])).out) as { document: string }
    const doc = await verifyBoundsDocument(signed.document, ca.bundle(), { trustDomain: td })
    expect(ceilingFor(doc.set, SpiffeId.fromString('spiffe://corp.example/agents/payments/i-1'))).toMatchObject({
      scopes: ['read'],
      maxTokenTtlSeconds: 600,
      maxRenewals: 3,
      maxDelegationDepth: 2,
      allowBearer: false,
    })
  })

  it.each([
    ['a scope the parent lacks', ['--scope', 'admin'], '/agents/q.scopes: widens ancestor "/agents"'],
    ['more renewals than the parent', ['--max-renewals', '6'], '/agents/q.max_renewals: widens ancestor "/agents"'],
    ['a bad delegatee', ['--may-delegate-to', 'agents/'], '/agents/q.may_delegate_to.0'],
  ])('refuses %s with its path, storing nothing', async (_t, args, msg) => {
    const before = svc.current().toJSON()
    const f = await failure(['set', '--socket', socket, '--prefix', '/agents/q', ...args])
    expect(f).toMatchObject({ status: grpc.status.INVALID_ARGUMENT, code: 'ERR_BOUNDS_INVALID' })
    expect(f.details).toContain(msg)
    expect(svc.current().toJSON()).toEqual(before)
  })
})
