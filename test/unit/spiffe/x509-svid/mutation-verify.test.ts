import * as asn1js from 'asn1js'
import { describe, expect, it } from 'vitest'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import type { X509BundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { parseLeafSpiffeId, verifyX509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { seq, smallInteger } from '../../../../src/spiffe/x509-svid/der.js'
import {
  bcValue,
  ca,
  certificate,
  ecKey,
  ext,
  HOUR,
  ID,
  KU_BITS,
  kuValue,
  leaf,
  LEAF_KEY,
  leafExtensions,
  name,
  NOW,
  OIDS,
  refusalOf,
  type Ca,
} from './mutation-certs.js'

// verify.ts: each refusal of verifyX509Svid with its exact code, message,
// cause and details; the validity and path-length boundaries; the returned
// chain (test/mutation-survivors.md, x509-svid). Titles stay plain: Stryker's
// vitest runner selects tests by name.

const td = TrustDomain.fromString('example.org')
const root = ca('root')
const bundle = new X509Bundle(td, [root.der])
const good = leaf(root)
const NB = new Date(NOW.getTime() - HOUR)
const NA = new Date(NOW.getTime() + HOUR)
const GARBAGE = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x01)

const verify = (chain: Uint8Array[], source: X509BundleSource = bundle, now: Date | 'clock' = NOW) =>
  verifyX509Svid(chain, source, now === 'clock' ? {} : { now })
const untrusted = (message: string) => ({ code: 'ERR_X509_SVID_UNTRUSTED', message: `x509svid: ${message}` })
const invalid = (message: string) => ({ code: 'ERR_X509_SVID_INVALID', message: `x509svid: ${message}` })

describe('verifyX509Svid input checks', () => {
  it('TypeError for a chain that is not an array', async () => {
    await expect(verifyX509Svid('abc' as never, bundle, { now: NOW })).rejects.toThrow(new TypeError('chain must be an array of DER certificates'))
  })

  it('refuses an empty chain', async () => {
    expect(await refusalOf(verify([]))).toMatchObject(invalid('empty certificate chain'))
  })

  it('refuses 17 certificates and reads 16', async () => {
    expect(await refusalOf(verify([good, ...Array<Uint8Array>(16).fill(GARBAGE)]))).toMatchObject(invalid('chain has more than 16 certificates'))
    expect(await refusalOf(verify([good, ...Array<Uint8Array>(15).fill(GARBAGE)]))).toMatchObject(invalid('certificate 1 cannot be parsed'))
  })

  it('names the certificate that cannot be parsed', async () => {
    expect(await refusalOf(verify([GARBAGE]))).toMatchObject(invalid('leaf certificate cannot be parsed'))
    expect(await refusalOf(verify([good, root.der, GARBAGE]))).toMatchObject(invalid('certificate 2 cannot be parsed'))
  })

  it('applies the leaf rules', async () => {
    const noKu = leaf(root, { extensions: leafExtensions({ KU: null }) })
    expect(await refusalOf(verify([noKu]))).toMatchObject(invalid('leaf certificate must have a key usage extension'))
    expect(await refusalOf(verify([root.der]))).toMatchObject(invalid('certificate has no URI SAN'))
  })
})

describe('verifyX509Svid validity boundaries', () => {
  it('accepts at notBefore and at notAfter', async () => {
    expect((await verify([good], bundle, NB)).id.toString()).toBe(ID)
    expect((await verify([good], bundle, NA)).id.toString()).toBe(ID)
  })

  it('refuses one millisecond before notBefore', async () => {
    const r = await refusalOf(verify([good], bundle, new Date(NB.getTime() - 1)))
    expect(r).toMatchObject(invalid('leaf certificate is not yet valid'))
    expect(r.cause).toBeUndefined()
  })

  it('refuses one millisecond after notAfter', async () => {
    expect(await refusalOf(verify([good], bundle, new Date(NA.getTime() + 1)))).toMatchObject(invalid('leaf certificate has expired'))
  })

  it('uses the given time, not the clock', async () => {
    // The fixtures are valid around NOW (June 2026) only.
    expect((await verify([good], bundle, NOW)).id.toString()).toBe(ID)
  })

  it('uses the clock when no time is given', async () => {
    const clock = Date.now()
    const current = leaf(root, { notBefore: new Date(clock - HOUR), notAfter: new Date(clock + HOUR) })
    // The root is valid around NOW only, so path validation fails, but the leaf's dates pass.
    expect(await refusalOf(verify([current], bundle, 'clock'))).toMatchObject(untrusted('could not verify leaf certificate'))
    const old = await refusalOf(verify([good], bundle, 'clock'))
    expect(old).toMatchObject(invalid(clock > NA.getTime() ? 'leaf certificate has expired' : 'leaf certificate is not yet valid'))
  })
})

describe('verifyX509Svid bundle checks', () => {
  it('refuses a bundle of another trust domain returned by the source', async () => {
    const other = new X509Bundle(TrustDomain.fromString('other.org'), [root.der])
    expect(await refusalOf(verify([good], { getX509BundleForTrustDomain: () => other }))).toMatchObject(
      untrusted('bundle of trust domain "other.org" returned for "example.org"'),
    )
  })

  it('asks the source for the leaf trust domain and passes its refusal on', async () => {
    const asked: string[] = []
    const source: X509BundleSource = {
      getX509BundleForTrustDomain: (t) => {
        asked.push(t.name)
        return bundle
      },
    }
    await verify([good], source)
    expect(asked).toEqual(['example.org'])
    const r = await refusalOf(verify([good], new X509Bundle(TrustDomain.fromString('other.org'), [root.der])))
    expect(r).toMatchObject({ code: 'ERR_BUNDLE_NOT_FOUND', message: 'no X.509 bundle for trust domain "example.org"' })
  })

  it('refuses an empty bundle', async () => {
    expect(await refusalOf(verify([good], new X509Bundle(td, [])))).toMatchObject(untrusted('bundle for trust domain "example.org" is empty'))
  })

  it('refuses an authority that cannot be read, naming it, with the asn1 error as cause', async () => {
    const junk = Uint8Array.of(1, 2, 3)
    const r = await refusalOf(verify([good], new X509Bundle(td, [root.der, junk])))
    expect(r).toMatchObject(untrusted('authority 1 cannot be parsed for path validation'))
    expect((r.cause as Error).message).toBe(asn1js.fromBER(new Uint8Array(junk)).result.error)
    const r0 = await refusalOf(verify([good], new X509Bundle(td, [GARBAGE])))
    expect(r0).toMatchObject(untrusted('authority 0 cannot be parsed for path validation'))
    expect((r0.cause as Error).message).toBe("Object's schema was not verified against input data for Certificate")
  })
})

describe('verifyX509Svid path validation', () => {
  // An issuer name that is not a Name: our parser does not read the issuer, pkijs does.
  const junkIssuer = () =>
    certificate({ publicKey: LEAF_KEY.publicKey, signingKey: root.privateKey, issuer: seq(smallInteger(1)), subject: name('l'), extensions: leafExtensions() })

  it('refuses a leaf the path validator cannot read', async () => {
    const r = await refusalOf(verify([junkIssuer()]))
    expect(r).toMatchObject(untrusted('leaf certificate cannot be parsed for path validation'))
    expect((r.cause as Error).message).toBe("Object's schema was not verified against input data for Certificate")
  })

  it('refuses an intermediate the path validator cannot read', async () => {
    const r = await refusalOf(verify([good, root.der, junkIssuer()]))
    expect(r).toMatchObject(untrusted('certificate 2 cannot be parsed for path validation'))
    expect((r.cause as Error).message).toBe("Object's schema was not verified against input data for Certificate")
  })

  it('reports the path validator result as details when no path is found', async () => {
    const stranger = ca('root')
    const r = await refusalOf(verify([leaf(stranger)]))
    expect(r).toMatchObject(untrusted('could not verify leaf certificate'))
    expect(r.details).toEqual({ reason: 'No valid certificate paths found', code: -1 })
    expect(r.cause).toBeUndefined()
  })

  it('refuses a leaf whose issuer is not a CA for the validator', async () => {
    const noBc = ca('nobc', root, { extensions: [ext(OIDS.KU, kuValue(KU_BITS.keyCertSign), true)] })
    const r = await refusalOf(verify([leaf(noBc), noBc.der]))
    expect(r).toMatchObject(untrusted('could not verify leaf certificate'))
    expect(r.details).toEqual({ reason: 'One of intermediate certificates is not a CA certificate', code: 14 })
  })

  it('returns the caller chain and the bundle authority, by identity', async () => {
    const inter = ca('inter', root)
    const l = leaf(inter)
    const chain = [l, inter.der]
    const b = new X509Bundle(td, [root.der])
    const r = await verify(chain, b)
    expect(r.id.toString()).toBe(ID)
    expect(r.verifiedChain).toHaveLength(3)
    expect(r.verifiedChain[0]).toBe(l)
    expect(r.verifiedChain[1]).toBe(inter.der)
    expect(r.verifiedChain[2]).toBe(b.authorities[0])
    expect(r.verifiedChain[2]).toEqual(root.der)
    expect(parseLeafSpiffeId(l).toString()).toBe(ID)
  })

  it('refuses a path that does not start at the caller leaf', async () => {
    // The leaf is also an authority: the validator's path starts at the bundle's copy.
    const r = await refusalOf(verify([good], new X509Bundle(td, [good, root.der])))
    expect(r).toMatchObject(untrusted('path validation did not start at the leaf'))
  })

  it('refuses an intermediate without keyCertSign, with the rule as cause', async () => {
    const inter = ca('inter', root, { extensions: [ext(OIDS.BC, bcValue(true), true)] })
    const r = await refusalOf(verify([leaf(inter), inter.der]))
    expect(r).toMatchObject(untrusted('certificate 1 of the path is not a valid signing certificate'))
    expect((r.cause as Error).message).toBe("x509svid: signing certificate must have 'keyCertSign' set as key usage")
  })

  it('refuses a bundle authority that only a lax parser reads', async () => {
    // critical FALSE written out is not DER: pkijs reads it, our parser does not.
    const k = ecKey()
    const n = name('lax')
    const lax: Ca = {
      ...k,
      name: n,
      der: certificate({
        publicKey: k.publicKey,
        signingKey: k.privateKey,
        issuer: n,
        subject: n,
        notBefore: new Date(NOW.getTime() - 24 * HOUR),
        notAfter: new Date(NOW.getTime() + 24 * HOUR),
        extensions: [
          ext(OIDS.BC, bcValue(true), true),
          ext(OIDS.KU, kuValue(KU_BITS.keyCertSign), true),
          { oid: OIDS.EKU, value: Buffer.from('300a06082b06010505070302', 'hex'), explicitFalse: true },
        ],
      }),
    }
    const r = await refusalOf(verify([leaf(lax)], new X509Bundle(td, [lax.der])))
    expect(r).toMatchObject(untrusted('a bundle authority cannot be parsed'))
    expect((r.cause as Error).message).toBe('x509svid: authority cannot be parsed')
  })
})

describe('verifyX509Svid path length constraints', () => {
  it('pathLen 0 allows a leaf directly below', async () => {
    const limited = ca('limited', root, { pathLen: 0 })
    expect((await verify([leaf(limited), limited.der])).verifiedChain).toHaveLength(3)
  })

  it('pathLen 0 refuses one intermediate below', async () => {
    const limited = ca('limited', root, { pathLen: 0 })
    const below = ca('below', limited)
    expect(await refusalOf(verify([leaf(below), below.der, limited.der]))).toMatchObject(
      untrusted('certificate 2 of the path exceeds its path length constraint'),
    )
  })

  it('root pathLen 0 refuses an intermediate', async () => {
    const r0 = ca('r0', undefined, { pathLen: 0 })
    const i = ca('i', r0)
    expect(await refusalOf(verify([leaf(i), i.der], new X509Bundle(td, [r0.der])))).toMatchObject(
      untrusted('certificate 2 of the path exceeds its path length constraint'),
    )
  })

  it('root pathLen 1 allows one intermediate and refuses two', async () => {
    const r1 = ca('r1', undefined, { pathLen: 1 })
    const b = new X509Bundle(td, [r1.der])
    const i1 = ca('i1', r1)
    expect((await verify([leaf(i1), i1.der], b)).verifiedChain).toHaveLength(3)
    const i2 = ca('i2', i1)
    expect(await refusalOf(verify([leaf(i2), i2.der, i1.der], b))).toMatchObject(untrusted('certificate 3 of the path exceeds its path length constraint'))
  })

  it('root pathLen 2 allows two intermediates', async () => {
    const r2 = ca('r2', undefined, { pathLen: 2 })
    const i1 = ca('i1', r2)
    const i2 = ca('i2', i1)
    expect((await verify([leaf(i2), i2.der, i1.der], new X509Bundle(td, [r2.der]))).verifiedChain).toHaveLength(4)
  })
})
