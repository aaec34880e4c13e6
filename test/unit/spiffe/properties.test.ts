import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { JwtBundle } from '../../../src/spiffe/bundle/jwt-bundle.js'
import { SpiffeBundle } from '../../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../../src/spiffe/bundle/x509-bundle.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { makeCaCert, makeJwk } from './bundle/test-certs.js'

const td = TrustDomain.fromString('domain.test')
const RUNS = { numRuns: 500 }

/** Any UTF-16 code unit, lone surrogates included (cheaper to set up than fast-check's 'binary' unit). */
const anyChar = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c))
const anyString = (maxLength: number) => fc.string({ unit: anyChar, maxLength })

/** Runs `fn`; any throw other than IdentityError fails the property. Returns whether it succeeded. */
function onlyIdentityErrors(fn: () => unknown): boolean {
  try {
    fn()
    return true
  } catch (err) {
    if (err instanceof IdentityError) return false
    throw err
  }
}

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789.-_'.split('')
const PATH_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_'.split('')
const tdName = fc.string({ unit: fc.constantFrom(...TD_CHARS), minLength: 1, maxLength: 40 })
const segment = fc.string({ unit: fc.constantFrom(...PATH_CHARS), minLength: 1, maxLength: 20 }).filter((s) => s !== '.' && s !== '..')
const validId = fc.record({ td: tdName, segs: fc.array(segment, { maxLength: 8 }) })

/** Strings close to SPIFFE IDs: a valid-looking prefix plus noise from the interesting characters. */
const NOISE = [...PATH_CHARS, '/', ':', '@', '%', '?', '#', ' ', '\n', '[', ']', 'A', 'é', '\u0000', '\uD800', 'S', '.']
const nearId = fc
  .tuple(
    fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:', 'spiffe:/', 'http://', '', 'spiffe:///'),
    fc.string({ unit: fc.constantFrom(...NOISE), maxLength: 60 }),
  )
  .map(([a, b]) => a + b)

describe('SpiffeId / TrustDomain properties', () => {
  it('fromString never throws anything but IdentityError (arbitrary strings)', () => {
    fc.assert(
      fc.property(fc.oneof(anyString(100), nearId), (s) => {
        const ok = onlyIdentityErrors(() => SpiffeId.fromString(s))
        expect(SpiffeId.isValid(s)).toBe(ok)
      }),
      RUNS,
    )
  })

  it('TrustDomain.fromString never throws anything but IdentityError', () => {
    fc.assert(
      fc.property(fc.oneof(anyString(100), nearId, tdName), (s) => {
        const ok = onlyIdentityErrors(() => TrustDomain.fromString(s))
        expect(TrustDomain.isValid(s)).toBe(ok)
      }),
      RUNS,
    )
  })

  it('every parsed ID is canonical: fromString(id.toString()) equals id and has the same string', () => {
    fc.assert(
      fc.property(nearId, (s) => {
        let id: SpiffeId
        try {
          id = SpiffeId.fromString(s)
        } catch (err) {
          if (err instanceof IdentityError) return
          throw err
        }
        const again = SpiffeId.fromString(id.toString())
        expect(again.equals(id)).toBe(true)
        expect(again.toString()).toBe(id.toString())
      }),
      RUNS,
    )
  })

  it('generated valid IDs parse and round-trip, and fromSegments agrees with fromString', () => {
    fc.assert(
      fc.property(validId, fc.boolean(), ({ td: name, segs }, upperScheme) => {
        const path = segs.map((s) => `/${s}`).join('')
        const str = `spiffe://${name}${path}`
        const id = SpiffeId.fromString(upperScheme ? str.replace('spiffe', 'SPIFFE') : str)
        expect(id.toString()).toBe(str)
        expect(id.trustDomain.name).toBe(name)
        expect(id.path).toBe(path)
        expect(id.segments()).toEqual(segs)
        expect(SpiffeId.fromString(id.toString()).equals(id)).toBe(true)
        const t = TrustDomain.fromString(name)
        expect(SpiffeId.fromSegments(t, ...segs).equals(id)).toBe(true)
        expect(SpiffeId.fromPath(t, path).equals(id)).toBe(true)
        expect(TrustDomain.fromString(t.idString()).equals(t)).toBe(true)
        // Every ancestor path is a prefix on a segment boundary.
        for (let i = 0; i <= segs.length; i++) {
          expect(
            id.hasPathPrefix(
              segs
                .slice(0, i)
                .map((s) => `/${s}`)
                .join(''),
            ),
          ).toBe(true)
        }
      }),
      RUNS,
    )
  })

  it('hasPathPrefix never matches a mere string prefix inside a segment', () => {
    fc.assert(
      fc.property(validId, segment, segment, ({ td: name, segs }, head, tail) => {
        const base = segs.map((s) => `/${s}`).join('')
        const id = SpiffeId.fromString(`spiffe://${name}${base}/${head}${tail}`)
        expect(id.hasPathPrefix(`${base}/${head}`)).toBe(tail.length === 0)
      }),
      RUNS,
    )
  })
})

/** JSON-ish values shaped like bundle documents, so that parsing reaches deep branches. */
function bundleDocArbitrary(x5cPool: string[], jwkPool: Array<Record<string, unknown>>) {
  const str = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('EC', 'RSA', 'OKP', 'oct', 'x509-svid', 'jwt-svid', 'sig', 'wit-svid'))
  const junk = fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.double(), str, fc.array(str, { maxLength: 3 }))
  const key = fc.record(
    {
      use: fc.oneof(fc.constantFrom('x509-svid', 'jwt-svid', 'wit-svid', 'sig'), junk),
      kty: fc.oneof(fc.constantFrom('EC', 'RSA', 'OKP', 'oct', 'XX'), junk),
      kid: fc.oneof(fc.constantFrom('k1', 'k2', ''), junk),
      x5c: fc.oneof(fc.array(fc.constantFrom(...x5cPool), { maxLength: 3 }), fc.array(str, { maxLength: 2 }), junk),
      crv: fc.oneof(fc.constantFrom('P-256', 'P-384', 'Ed25519'), junk),
      x: fc.oneof(fc.constantFrom(...jwkPool.map((j) => String(j.x))), junk),
      y: fc.oneof(fc.constantFrom(...jwkPool.map((j) => String(j.y ?? ''))), junk),
      n: junk,
      e: fc.oneof(fc.constant('AQAB'), junk),
      d: junk,
    },
    { requiredKeys: [] },
  )
  const validKey = fc.oneof(
    fc.constantFrom(...x5cPool).map((c) => ({ use: 'x509-svid', kty: 'EC', x5c: [c] })),
    fc.tuple(fc.constantFrom(...jwkPool), fc.constantFrom('k1', 'k2', 'k3', 'k4')).map(([j, kid]) => ({ ...j, kid })),
  )
  // A valid key with one member replaced by junk or removed.
  const mutatedKey = fc
    .tuple(validKey, fc.constantFrom('use', 'kty', 'kid', 'x5c', 'crv', 'x', 'y', 'd'), fc.option(junk, { nil: undefined }))
    .map(([k, member, v]) => {
      const out: Record<string, unknown> = { ...k }
      if (v === undefined) delete out[member]
      else out[member] = v
      return out
    })
  const wholeKey = fc.oneof(
    { arbitrary: validKey, weight: 4 },
    { arbitrary: mutatedKey, weight: 2 },
    { arbitrary: key, weight: 1 },
    { arbitrary: junk, weight: 1 },
  )
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record(
        {
          keys: fc.oneof({ arbitrary: fc.array(wholeKey, { maxLength: 5 }), weight: 5 }, { arbitrary: junk, weight: 1 }),
          spiffe_sequence: fc.oneof({ arbitrary: fc.nat(), weight: 5 }, { arbitrary: junk, weight: 1 }),
          spiffe_refresh_hint: fc.oneof({ arbitrary: fc.nat(), weight: 5 }, { arbitrary: junk, weight: 1 }),
        },
        { requiredKeys: [] },
      ),
    },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
    {
      weight: 1,
      arbitrary: fc.anything({ maxDepth: 2 }).map((v) => {
        try {
          return JSON.parse(JSON.stringify(v) ?? 'null') as unknown
        } catch {
          return null
        }
      }),
    },
  )
}

describe('bundle parser properties', () => {
  let certs: Uint8Array[]
  let jwks: Array<Record<string, unknown>>
  beforeAll(async () => {
    certs = await Promise.all([makeCaCert('ec-p256'), makeCaCert('ec-p384')])
    jwks = [
      { use: 'jwt-svid', kid: 'k1', ...makeJwk('ec-p256').pub },
      { use: 'jwt-svid', kid: 'k2', ...makeJwk('ec-p384').pub },
      { kid: 'k3', ...makeJwk('ed25519').pub },
    ]
  })

  it('SpiffeBundle.parse and JwtBundle.parseJwks only throw IdentityError on JSON-ish documents', () => {
    const x5c = certs.map((c) => Buffer.from(c).toString('base64'))
    fc.assert(
      fc.property(bundleDocArbitrary(x5c, jwks), fc.boolean(), (doc, asBytes) => {
        const text = JSON.stringify(doc) ?? 'null'
        const input = asBytes ? new TextEncoder().encode(text) : text
        const ok = onlyIdentityErrors(() => {
          const b = SpiffeBundle.parse(td, input)
          // Whatever parses marshals to a document that parses back to the same bundle.
          expect(SpiffeBundle.parse(td, b.marshal()).equals(b)).toBe(true)
        })
        if (ok) expect(SpiffeBundle.parse(td, text).marshal()).toBe(SpiffeBundle.parse(td, input).marshal())
        onlyIdentityErrors(() => {
          const j = JwtBundle.parseJwks(td, input)
          expect(JwtBundle.parseJwks(td, j.toJwks()).toJwks()).toBe(j.toJwks())
        })
      }),
      RUNS,
    )
  })

  it('SpiffeBundle.parse and JwtBundle.parseJwks only throw IdentityError on arbitrary text and bytes', () => {
    fc.assert(
      fc.property(fc.oneof(anyString(200), fc.uint8Array({ maxLength: 200 })), (input) => {
        onlyIdentityErrors(() => SpiffeBundle.parse(td, input))
        onlyIdentityErrors(() => JwtBundle.parseJwks(td, input))
      }),
      RUNS,
    )
  })

  it('X509Bundle.parseDer only throws IdentityError on arbitrary and mutated DER', () => {
    const mutated = fc
      .tuple(fc.constantFrom(0, 1), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat({ max: 40 }), fc.boolean())
      .map(([which, pos, byte, cut, concat]) => {
        const base = Buffer.from(concat ? Buffer.concat([certs[0]!, certs[1]!]) : certs[which]!)
        base[pos % base.length] = byte
        return new Uint8Array(base.subarray(0, Math.max(0, base.length - cut)))
      })
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutated), (der) => {
        const ok = onlyIdentityErrors(() => {
          const b = X509Bundle.parseDer(td, der)
          expect(Buffer.from(X509Bundle.parseDer(td, b.toDer()).toDer()).equals(Buffer.from(b.toDer()))).toBe(true)
        })
        // Every accepted input consists of whole certificates and nothing else.
        if (ok) expect(X509Bundle.parseDer(td, der).toDer().length).toBeLessThanOrEqual(der.length)
      }),
      RUNS,
    )
  })

  it('X509Bundle.parsePem only throws IdentityError, and accepted PEM round-trips', () => {
    const pem = certs.map((c) => new X509Bundle(td, [c]).toPem())
    const PEM_NOISE = ['-----BEGIN ', '-----END ', 'CERTIFICATE', '-----', '\n', '\r\n', ' ', 'A', '=', ':', 'MII', '!']
    const pemish = fc
      .array(fc.oneof(fc.constantFrom(...pem), fc.constantFrom(...PEM_NOISE), fc.string({ maxLength: 8 })), { maxLength: 8 })
      .map((parts) => parts.join(''))
    fc.assert(
      fc.property(fc.oneof(anyString(200), pemish), (text) => {
        onlyIdentityErrors(() => {
          const b = X509Bundle.parsePem(td, text)
          expect(X509Bundle.parsePem(td, b.toPem()).equals(b)).toBe(true)
        })
      }),
      RUNS,
    )
  })
})
