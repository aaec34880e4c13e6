import { X509Certificate } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { toPemBlock } from '../../../../src/common/crypto/pem.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { publishBundleFiles, publishBoundsDocument } from '../../../../src/server/ca/bundle-files.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { upstreamAuthorityFromPem } from '../../../../src/server/ca/upstream.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { tempDir } from '../../../helpers/temp.js'

const td = TrustDomain.fromString('upstream.example')
const now = Date.now()
const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) }
const keyPem = (k: ReturnType<typeof generateKeyPair>) => k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string

async function chain() {
  const rootKey = generateKeyPair('ec-p256')
  const root = await createCaCertificate({ trustDomain: td, publicKey: rootKey.publicKey, signer: new KeyObjectSigner(rootKey.privateKey), ...validity })
  const interKey = generateKeyPair('ec-p256')
  const inter = await createCaCertificate({
    trustDomain: td,
    publicKey: interKey.publicKey,
    signer: new KeyObjectSigner(rootKey.privateKey),
    issuer: { certificate: root },
    ...validity,
  })
  const leafKey = generateKeyPair('ec-p256')
  const leaf = await createX509Svid({
    spiffeId: SpiffeId.fromString('spiffe://upstream.example/w'),
    publicKey: leafKey.publicKey,
    signer: new KeyObjectSigner(interKey.privateKey),
    issuer: { certificate: inter },
    ...validity,
  })
  return { root, rootKey, inter, interKey, leaf, leafKey }
}

describe('upstreamAuthorityFromPem', () => {
  it('takes the CA certificate and its key; roots default to the last certificate, the rest are intermediates', async () => {
    const c = await chain()
    const u = upstreamAuthorityFromPem({
      certPem: toPemBlock('CERTIFICATE', c.inter) + toPemBlock('CERTIFICATE', c.root),
      keyPem: keyPem(c.interKey),
      bundlePem: undefined,
    })
    expect(Buffer.from(u.certificate)).toEqual(Buffer.from(c.inter))
    expect(u.roots.map((r) => Buffer.from(r))).toEqual([Buffer.from(c.root)])
    expect(u.intermediates.map((r) => Buffer.from(r))).toEqual([Buffer.from(c.root)])
    expect(u.signer.publicKey.equals(c.interKey.publicKey)).toBe(true)
    const withBundle = upstreamAuthorityFromPem({
      certPem: toPemBlock('CERTIFICATE', c.root),
      keyPem: keyPem(c.rootKey),
      bundlePem: toPemBlock('CERTIFICATE', c.root) + toPemBlock('CERTIFICATE', c.inter),
    })
    expect(withBundle.roots).toHaveLength(2)
  })

  it.each<{ title: string; make: (c: Awaited<ReturnType<typeof chain>>) => { certPem: string; keyPem: string }; message: RegExp }>([
    { title: 'no certificate', make: (c) => ({ certPem: '', keyPem: keyPem(c.rootKey) }), message: /holds no certificate/ },
    {
      title: 'a key of another certificate',
      make: (c) => ({ certPem: toPemBlock('CERTIFICATE', c.root), keyPem: keyPem(c.interKey) }),
      message: /does not match/,
    },
    { title: 'a certificate that is not a CA', make: (c) => ({ certPem: toPemBlock('CERTIFICATE', c.leaf), keyPem: keyPem(c.leafKey) }), message: /not a CA/ },
    {
      title: 'a key that does not parse',
      make: (c) => ({
        certPem: toPemBlock('CERTIFICATE', c.root),
        keyPem: '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n',
      }),
      message: /upstream_authority: /,
    },
  ])('refuses $title with ERR_CONFIG_INVALID, never echoing the key', async ({ make, message }) => {
    const c = await chain()
    const p = make(c)
    let err: unknown
    try {
      upstreamAuthorityFromPem({ ...p, bundlePem: undefined })
    } catch (e) {
      err = e
    }
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID', message: expect.stringMatching(message) })
    const body = p.keyPem.split('\n').slice(1, -2).join('')
    expect((err as Error).message).not.toContain(body)
  })
})

describe('bundle files', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('wbundle-')
  })
  afterEach(() => tmp.cleanup())

  it("writes the CA's bundle as PEM and as a SPIFFE bundle document, leaving no temporary file; the bounds JWS beside them", async () => {
    const clock = new FakeClock()
    const ca = new CaManager({
      trustDomain: td,
      keyManager: new MemoryKeyManager(),
      ds: createMemoryDataStore({ clock }),
      clock,
      log: captureLogger(),
      caTtlMs: 86_400_000,
      caKeyType: 'ec-p256',
      jwtKeyType: 'ec-p256',
      refreshHintSeconds: 60,
    })
    await ca.init()
    const b = ca.bundle()
    const pem = publishBundleFiles(tmp.dir, b)
    expect(readFileSync(join(tmp.dir, 'bundle.pem'), 'utf8')).toBe(pem)
    expect(X509Bundle.parsePem(td, pem).authorities.map((d) => new X509Certificate(d).fingerprint256)).toEqual(
      b.x509Authorities.map((d) => new X509Certificate(d).fingerprint256),
    )
    const doc = SpiffeBundle.parse(td, readFileSync(join(tmp.dir, 'bundle.spiffe'), 'utf8'))
    expect(doc.sequenceNumber).toBe(b.sequenceNumber)
    publishBoundsDocument(tmp.dir, 'a.b.c')
    expect(readFileSync(join(tmp.dir, 'bounds.jws'), 'utf8')).toBe('a.b.c\n')
    expect(readdirSync(tmp.dir).sort()).toEqual(['bounds.jws', 'bundle.pem', 'bundle.spiffe'])
    expect(existsSync(join(tmp.dir, `bundle.pem.tmp-${process.pid}`))).toBe(false)
  })
})
