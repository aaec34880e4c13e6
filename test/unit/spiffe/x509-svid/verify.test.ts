import { describe, expect, it, beforeAll } from 'vitest'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { isIdentityError, type ErrorCode } from '../../../../src/errors/index.js'
import { generateKeyPair } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createX509Svid, parseLeafSpiffeId, verifyX509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import type { X509BundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { HOUR, KU, makeIntermediate, makeRoot, NOW, peculiarLeaf, type PeculiarLeafOptions, type TestCa } from './pki.js'

const td = TrustDomain.fromString('example.org')
const ID = 'spiffe://example.org/ns/web'

async function codeOf(p: Promise<unknown>): Promise<ErrorCode | 'ok'> {
  try {
    await p
    return 'ok'
  } catch (err) {
    if (isIdentityError(err)) return err.code
    throw err
  }
}

let root: TestCa
let inter: TestCa
let otherRoot: TestCa
let bundle: X509Bundle
const leafKey = generateKeyPair('ec-p256')

beforeAll(async () => {
  root = await makeRoot('example.org', 'ec-p256')
  inter = await makeIntermediate(root, 'example.org', 'ec-p384')
  otherRoot = await makeRoot('example.org', 'ec-p256')
  bundle = new X509Bundle(td, [root.certificate])
})

describe('verifyX509Svid: leaf rules (leaves built by @peculiar/x509)', () => {
  const DS = KU.digitalSignature
  const cases: Array<[string, PeculiarLeafOptions, ErrorCode | 'ok']> = [
    ['a well-formed leaf', { uris: [ID], ca: false, keyUsage: DS }, 'ok'],
    ['a leaf without basicConstraints', { uris: [ID], keyUsage: DS }, 'ok'],
    ['a leaf with DNS names too', { uris: [ID], dnsNames: ['web.example.org'], keyUsage: DS }, 'ok'],
    ['two URI SANs', { uris: [ID, 'spiffe://example.org/ns/db'], keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['no URI SAN', { dnsNames: ['web.example.org'], keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['no SAN at all', { keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['a non-SPIFFE URI', { uris: ['https://example.org/ns/web'], keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['a trust-domain ID without path', { uris: ['spiffe://example.org'], keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['an invalid SPIFFE ID path', { uris: ['spiffe://example.org/a//b'], keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['a CA leaf', { uris: [ID], ca: true, keyUsage: DS }, 'ERR_X509_SVID_INVALID'],
    ['keyCertSign in a leaf', { uris: [ID], keyUsage: DS | KU.keyCertSign }, 'ERR_X509_SVID_INVALID'],
    ['cRLSign in a leaf', { uris: [ID], keyUsage: DS | KU.cRLSign }, 'ERR_X509_SVID_INVALID'],
    ['no keyUsage', { uris: [ID] }, 'ERR_X509_SVID_INVALID'],
    ['keyUsage without digitalSignature', { uris: [ID], keyUsage: KU.keyEncipherment }, 'ERR_X509_SVID_INVALID'],
    ['empty subject with critical SAN', { uris: [ID], keyUsage: DS, subject: '', sanCritical: true }, 'ok'],
    ['empty subject with non-critical SAN', { uris: [ID], keyUsage: DS, subject: '', sanCritical: false }, 'ERR_X509_SVID_INVALID'],
    [
      'an expired leaf',
      { uris: [ID], keyUsage: DS, notBefore: new Date(NOW.getTime() - 3 * HOUR), notAfter: new Date(NOW.getTime() - HOUR) },
      'ERR_X509_SVID_INVALID',
    ],
    [
      'a not-yet-valid leaf',
      { uris: [ID], keyUsage: DS, notBefore: new Date(NOW.getTime() + HOUR), notAfter: new Date(NOW.getTime() + 3 * HOUR) },
      'ERR_X509_SVID_INVALID',
    ],
  ]
  it.each(cases)('%s → %s', async (_name, opts, want) => {
    const leaf = await peculiarLeaf(root, leafKey.publicKey, opts)
    expect(await codeOf(verifyX509Svid([leaf], bundle, { now: NOW }))).toBe(want)
    const parsed = await codeOf(Promise.resolve().then(() => parseLeafSpiffeId(leaf)))
    // parseLeafSpiffeId checks the same rules except the dates.
    expect(parsed).toBe(opts.notBefore ? 'ok' : want)
  })
})

describe('verifyX509Svid: chains and trust', () => {
  const mk = (issuer: TestCa, id = ID, extra: { notAfter?: Date } = {}) =>
    createX509Svid({
      spiffeId: SpiffeId.fromString(id),
      publicKey: leafKey.publicKey,
      signer: issuer.signer,
      issuer: { certificate: issuer.certificate },
      notAfter: extra.notAfter ?? new Date(NOW.getTime() + HOUR),
    })

  it('verifies root → leaf and returns the verified chain', async () => {
    const leaf = await mk(root)
    const r = await verifyX509Svid([leaf], bundle, { now: NOW })
    expect(r.id.toString()).toBe(ID)
    expect(r.verifiedChain).toEqual([leaf, root.certificate])
  })

  it('verifies root → intermediate → leaf', async () => {
    const leaf = await mk(inter)
    const r = await verifyX509Svid([leaf, inter.certificate], bundle, { now: NOW })
    expect(r.verifiedChain).toEqual([leaf, inter.certificate, root.certificate])
  })

  it('verifies root → intermediate → intermediate → leaf (RSA in the middle)', async () => {
    const inter2 = await makeIntermediate(inter, 'example.org', 'rsa-2048')
    const leaf = await mk(inter2)
    const r = await verifyX509Svid([leaf, inter2.certificate, inter.certificate], bundle, { now: NOW })
    expect(r.verifiedChain).toHaveLength(4)
  })

  it('accepts a chain that also carries the root, and returns each certificate once', async () => {
    const leaf = await mk(inter)
    const r = await verifyX509Svid([leaf, inter.certificate, root.certificate], bundle, { now: NOW })
    expect(r.verifiedChain).toEqual([leaf, inter.certificate, root.certificate])
  })

  it('accepts the expiring-root chain before the root expires', async () => {
    const shortRoot = await makeRoot('example.org', 'ec-p256', { notAfter: new Date(NOW.getTime() + HOUR / 2) })
    const leaf = await peculiarLeaf(shortRoot, leafKey.publicKey, { uris: [ID], keyUsage: KU.digitalSignature, notAfter: new Date(NOW.getTime() + 2 * HOUR) })
    expect(await codeOf(verifyX509Svid([leaf], new X509Bundle(td, [shortRoot.certificate]), { now: NOW }))).toBe('ok')
  })

  it('honours pathLenConstraint', async () => {
    const limited = await makeIntermediate(root, 'example.org', 'ec-p256', { maxPathLength: 0 })
    const below = await makeIntermediate(limited, 'example.org', 'ec-p256')
    const direct = await mk(limited)
    expect(await codeOf(verifyX509Svid([direct, limited.certificate], bundle, { now: NOW }))).toBe('ok')
    const leaf = await mk(below)
    expect(await codeOf(verifyX509Svid([leaf, below.certificate, limited.certificate], bundle, { now: NOW }))).toBe('ERR_X509_SVID_UNTRUSTED')
  })

  const trustCases: Array<[string, () => Promise<[Uint8Array[], X509BundleSource]>, ErrorCode]> = [
    ['a leaf signed by an untrusted CA', async () => [[await mk(otherRoot)], bundle], 'ERR_X509_SVID_UNTRUSTED'],
    ['a chain missing its intermediate', async () => [[await mk(inter)], bundle], 'ERR_X509_SVID_UNTRUSTED'],
    ['a leaf of another trust domain', async () => [[await mk(root, 'spiffe://other.org/ns/web')], bundle], 'ERR_BUNDLE_NOT_FOUND'],
    [
      'a leaf of another trust domain signed by a CA that is trusted for this one',
      async () => {
        const other = TrustDomain.fromString('other.org')
        const source: X509BundleSource = {
          getX509BundleForTrustDomain: (t) => (t.equals(other) ? new X509Bundle(other, [otherRoot.certificate]) : bundle),
        }
        return [[await mk(root, 'spiffe://other.org/ns/web')], source]
      },
      'ERR_X509_SVID_UNTRUSTED',
    ],
    [
      'a source that returns the wrong trust domain',
      async () => [[await mk(root, 'spiffe://other.org/ns/web')], { getX509BundleForTrustDomain: () => bundle }],
      'ERR_X509_SVID_UNTRUSTED',
    ],
    ['an empty bundle', async () => [[await mk(root)], new X509Bundle(td, [])], 'ERR_X509_SVID_UNTRUSTED'],
    [
      'a chain whose root expired before the leaf',
      async () => {
        const shortRoot = await makeRoot('example.org', 'ec-p256', { notAfter: new Date(NOW.getTime() + HOUR / 2) })
        // @peculiar/x509 does not clamp the leaf to its issuer, as our builder does.
        const leaf = await peculiarLeaf(shortRoot, leafKey.publicKey, {
          uris: [ID],
          keyUsage: KU.digitalSignature,
          notAfter: new Date(NOW.getTime() + 2 * HOUR),
        })
        return [[leaf], new X509Bundle(td, [shortRoot.certificate])]
      },
      'ERR_X509_SVID_UNTRUSTED',
    ],
    ['a malformed leaf', async () => [[new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])], bundle], 'ERR_X509_SVID_INVALID'],
    ['an empty chain', async () => [[], bundle], 'ERR_X509_SVID_INVALID'],
  ]
  it.each(trustCases)('rejects %s with %s', async (name, setup, want) => {
    const [chain, source] = await setup()
    const now = name.includes('expired') ? new Date(NOW.getTime() + HOUR) : NOW
    expect(await codeOf(verifyX509Svid(chain, source, { now }))).toBe(want)
  })

  it('rejects a leaf whose signature was tampered with', async () => {
    const leaf = await mk(root)
    const bad = new Uint8Array(leaf)
    // The certificate's last byte is the last byte of the signature's s value: any value keeps
    // the DER well-formed (a byte further in could land on a length or a leading zero, and
    // then the certificate is malformed, not untrusted: that made this test flaky).
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 0x01
    expect(await codeOf(verifyX509Svid([bad], bundle, { now: NOW }))).toBe('ERR_X509_SVID_UNTRUSTED')
  })

  it('rejects a non-CA certificate used as an intermediate', async () => {
    // A leaf built by peculiar but "issued" by another leaf's key.
    const fakeIssuerKey = generateKeyPair('ec-p256')
    const fakeIssuer = await peculiarLeaf(root, fakeIssuerKey.publicKey, {
      uris: ['spiffe://example.org/fake'],
      keyUsage: KU.digitalSignature | KU.keyCertSign,
      subject: 'O=fake',
    })
    const pseudoCa: TestCa = { certificate: fakeIssuer, privateKey: fakeIssuerKey.privateKey, publicKey: fakeIssuerKey.publicKey, signer: undefined as never }
    const leaf = await peculiarLeaf(pseudoCa, leafKey.publicKey, { uris: [ID], keyUsage: KU.digitalSignature })
    expect(await codeOf(verifyX509Svid([leaf, fakeIssuer], bundle, { now: NOW }))).toBe('ERR_X509_SVID_UNTRUSTED')
  })
})
