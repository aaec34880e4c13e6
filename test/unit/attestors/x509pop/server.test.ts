import 'reflect-metadata'
import { X509Certificate, createHash, createPrivateKey, randomBytes, sign, webcrypto, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeChallenge, encodeAnswer, encodePayload, signedData } from '../../../../attestors/node/x509pop/payload.js'
import { verifyChain, x509popServerPlugin } from '../../../../attestors/node/x509pop/server.js'
import { selectPlugins } from '../../../../src/plugin/catalog.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { toPemBlock } from '../../../../src/common/crypto/pem.js'
import { IdentityError } from '../../../../src/errors/index.js'
import type { ServerNodeAttestor } from '../../../../src/plugin/contracts.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { tempDir } from '../../../helpers/temp.js'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const DAY = 86_400_000
/** Whole seconds: certificate times have second precision, so the validity bounds are exact. */
const NOW = Math.floor(Date.now() / 1000) * 1000
const td = TrustDomain.fromString('example.org')
const FAILED = { code: 'ERR_NODE_ATTESTATION_FAILED' }

interface Cert {
  der: Uint8Array
  keys: CryptoKeyPair
  key: KeyObject
  name: string
}

let serial = 0xab1
async function makeCert(
  name: string,
  opts: { issuer?: Cert; ca?: boolean; certSign?: boolean; notBefore?: number; notAfter?: number; signingKey?: CryptoKey; issuerName?: string } = {},
): Promise<Cert> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])
  const ca = opts.ca ?? false
  const exts: x509.Extension[] = [await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)]
  if (ca) exts.push(new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true))
  else {
    const usage = opts.certSign ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature
    exts.push(new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(usage, true))
  }
  if (opts.issuer) exts.push(await x509.AuthorityKeyIdentifierExtension.create(opts.issuer.keys.publicKey))
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(4, '0'),
    subject: name,
    issuer: opts.issuerName ?? opts.issuer?.name ?? name,
    notBefore: new Date(opts.notBefore ?? NOW - DAY),
    notAfter: new Date(opts.notAfter ?? NOW + DAY),
    publicKey: keys.publicKey,
    signingKey: opts.signingKey ?? (opts.issuer ?? { keys }).keys.privateKey,
    signingAlgorithm: EC,
    extensions: exts,
  })
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey))
  return { der: new Uint8Array(cert.rawData), keys, key: createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' }), name }
}

const sha1 = (der: Uint8Array) => createHash('sha1').update(der).digest('hex')
const flipLastByte = (der: Uint8Array) => der.map((b, i) => (i === der.length - 1 ? b ^ 1 : b))

describe('x509pop server attestor', () => {
  const tmp = tempDir('wx509pop-')
  let root: Cert, inter: Cert, leaf: Cert, interLeaf: Cert, otherRoot: Cert
  let attestor: ServerNodeAttestor
  let now = NOW

  const create = async (caBundle: string | string[]) =>
    x509popServerPlugin.create(x509popServerPlugin.parseConfig({ ca_bundle_path: caBundle }), {
      log: nullLogger,
      clock: { now: () => now },
      trustDomain: td,
      dataDir: tmp.dir,
    })

  /** An agent holding `key` that sends `chain` and signs the server's nonce (or what `tamper` makes of it). */
  const attest = (chain: Uint8Array[], key: KeyObject, tamper?: (nonce: Uint8Array) => Buffer, on = attestor) => {
    let challenged = false
    const result = on.attest(
      encodePayload({ chain }),
      async (c) => {
        challenged = true
        const { nonce } = decodeChallenge(c)
        return encodeAnswer({ signature: sign('sha256', tamper ? tamper(nonce) : signedData(nonce), key) })
      },
      {},
    )
    return { result, challenged: () => challenged }
  }

  beforeAll(async () => {
    root = await makeCert('CN=x509pop root', { ca: true })
    otherRoot = await makeCert('CN=x509pop root', { ca: true })
    inter = await makeCert('CN=x509pop intermediate', { ca: true, issuer: root })
    leaf = await makeCert('CN=node-1', { issuer: root })
    interLeaf = await makeCert('CN=node-2', { issuer: inter })
    writeFileSync(join(tmp.dir, 'ca.pem'), toPemBlock('CERTIFICATE', root.der))
    writeFileSync(join(tmp.dir, 'other.pem'), toPemBlock('CERTIFICATE', otherRoot.der))
    attestor = await create(join(tmp.dir, 'ca.pem'))
  })
  afterAll(() => tmp.cleanup())

  it('attests a leaf issued by a configured CA, with its selectors', async () => {
    const res = await attest([leaf.der], leaf.key).result
    expect(res.agentId.toString()).toBe(`spiffe://example.org/warrant/agent/x509pop/${sha1(leaf.der)}`)
    const serialHex = new x509.X509Certificate(leaf.der).serialNumber.toLowerCase()
    expect(serialHex).toMatch(/[a-f]/)
    expect(res.selectorValues).toEqual(['subject:cn:node-1', `serialnumber:${serialHex}`, `ca:fingerprint:${sha1(root.der)}`])
    expect(res.canReattest).toBe(true)
  })

  it('attests through an intermediate sent by the agent, listing the chain above the leaf', async () => {
    const res = await attest([interLeaf.der, inter.der], interLeaf.key).result
    expect(res.selectorValues).toEqual([
      'subject:cn:node-2',
      expect.stringMatching(/^serialnumber:[0-9a-f]+$/),
      `ca:fingerprint:${sha1(inter.der)}`,
      `ca:fingerprint:${sha1(root.der)}`,
    ])
  })

  it('gives no subject selector to a leaf without a CN', async () => {
    const noCn = await makeCert('O=nodes', { issuer: root })
    const res = await attest([noCn.der], noCn.key).result
    expect(res.selectorValues.filter((s) => s.startsWith('subject:'))).toEqual([])
    expect(res.selectorValues).toHaveLength(2)
  })

  it('accepts any of several configured CA files', async () => {
    const both = await create([join(tmp.dir, 'other.pem'), join(tmp.dir, 'ca.pem')])
    expect((await attest([leaf.der], leaf.key, undefined, both).result).agentId.toString()).toContain(sha1(leaf.der))
  })

  it('accepts a chain exactly at the bounds of its validity', async () => {
    const bounded = await makeCert('CN=bounded', { issuer: root, notBefore: NOW - 1000, notAfter: NOW + 1000 })
    for (const at of [NOW - 1000, NOW + 1000]) {
      now = at
      try {
        await expect(attest([bounded.der], bounded.key).result).resolves.toMatchObject({ canReattest: true })
      } finally {
        now = NOW
      }
    }
  })

  const rejects: {
    title: string
    chain: () => Promise<{ chain: Uint8Array[]; key: KeyObject; at?: number }>
    reason: string
    tamper?: (nonce: Uint8Array) => Buffer
  }[] = [
    {
      title: 'a leaf of another CA with the same name',
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: otherRoot })
        return { chain: [c.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'a leaf naming the configured CA (issuer and AKI) but signed by another key',
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: root, signingKey: otherRoot.keys.privateKey })
        return { chain: [c.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'a leaf of the configured CA with one bit of its signature flipped',
      chain: async () => ({ chain: [flipLastByte(leaf.der)], key: leaf.key }),
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'an intermediate naming the configured CA (issuer and AKI) but signed by another key',
      chain: async () => {
        const forged = await makeCert('CN=x509pop intermediate', { ca: true, issuer: root, signingKey: otherRoot.keys.privateKey })
        const c = await makeCert('CN=node-x', { issuer: forged })
        return { chain: [c.der, forged.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: "a leaf signed by the CA's key under another issuer name",
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: root, issuerName: 'CN=someone else' })
        return { chain: [c.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'a leaf of another CA sent with a genuine intermediate',
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: otherRoot })
        return { chain: [c.der, inter.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'a leaf naming the genuine intermediate (issuer and AKI) but signed by another key',
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: inter, signingKey: otherRoot.keys.privateKey })
        return { chain: [c.der, inter.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: "a leaf signed by the intermediate's key under another issuer name",
      chain: async () => {
        const c = await makeCert('CN=node-x', { issuer: inter, issuerName: 'CN=someone else' })
        return { chain: [c.der, inter.der], key: c.key }
      },
      reason: 'certificate does not chain to a trusted CA',
    },
    {
      title: 'a leaf whose intermediate is missing',
      chain: async () => ({ chain: [interLeaf.der], key: interLeaf.key }),
      reason: 'certificate does not chain to a trusted CA',
    },
    { title: 'a CA certificate as leaf', chain: async () => ({ chain: [inter.der], key: inter.key }), reason: 'leaf certificate is a CA' },
    {
      title: 'bytes that are not a certificate',
      chain: async () => ({ chain: [new Uint8Array([0x30, 3, 1, 2, 3])], key: leaf.key }),
      reason: 'certificate cannot be parsed',
    },
    {
      title: 'an expired leaf',
      chain: async () => {
        const c = await makeCert('CN=old', { issuer: root, notAfter: NOW - 1000 })
        return { chain: [c.der], key: c.key }
      },
      reason: 'certificate is expired or not yet valid',
    },
    {
      title: 'a leaf 1 ms after its notAfter',
      chain: async () => {
        const c = await makeCert('CN=old', { issuer: root, notAfter: NOW + 1000 })
        return { chain: [c.der], key: c.key, at: NOW + 1001 }
      },
      reason: 'certificate is expired or not yet valid',
    },
    {
      title: 'a leaf 1 ms before its notBefore',
      chain: async () => {
        const c = await makeCert('CN=new', { issuer: root, notBefore: NOW + 1000 })
        return { chain: [c.der], key: c.key, at: NOW + 999 }
      },
      reason: 'certificate is expired or not yet valid',
    },
    {
      title: 'a leaf checked after the CA expired',
      chain: async () => ({ chain: [leaf.der], key: leaf.key, at: NOW + DAY + 1000 }),
      reason: 'certificate is expired or not yet valid',
    },
    {
      title: 'a valid leaf under an expired intermediate',
      chain: async () => {
        const old = await makeCert('CN=old intermediate', { ca: true, issuer: root, notAfter: NOW - 1000 })
        const c = await makeCert('CN=node-x', { issuer: old })
        return { chain: [c.der, old.der], key: c.key }
      },
      reason: 'intermediate is expired or not a CA',
    },
    {
      title: 'a leaf under an intermediate that is not a CA',
      chain: async () => {
        const notCa = await makeCert('CN=not a ca', { ca: false, certSign: true, issuer: root })
        const c = await makeCert('CN=node-x', { issuer: notCa })
        return { chain: [c.der, notCa.der], key: c.key }
      },
      reason: 'intermediate is expired or not a CA',
    },
    {
      title: 'a proof of possession by another key',
      chain: async () => ({ chain: [leaf.der], key: interLeaf.key }),
      reason: 'proof of possession failed: signature does not verify',
    },
    {
      title: 'a proof of possession over another nonce',
      chain: async () => ({ chain: [leaf.der], key: leaf.key }),
      tamper: () => signedData(new Uint8Array(randomBytes(32))),
      reason: 'proof of possession failed: signature does not verify',
    },
    {
      title: 'a proof of possession without the context prefix',
      chain: async () => ({ chain: [leaf.der], key: leaf.key }),
      tamper: (nonce) => Buffer.from(nonce),
      reason: 'proof of possession failed: signature does not verify',
    },
  ]
  it.each(rejects)('rejects $title, with the reason', async ({ chain, reason, tamper }) => {
    const c = await chain()
    now = c.at ?? NOW
    try {
      const run = attest(c.chain, c.key, tamper)
      await expect(run.result).rejects.toMatchObject({ ...FAILED, message: `x509pop: ${reason}` })
      expect(run.challenged()).toBe(reason.startsWith('proof of possession'))
    } finally {
      now = NOW
    }
  })

  it('rejects a configured CA that has expired, or that is not a CA', async () => {
    const expiredRoot = await makeCert('CN=expired root', { ca: true, notAfter: NOW - 1000 })
    const notCaRoot = await makeCert('CN=plain root', { ca: false, certSign: true })
    for (const r of [expiredRoot, notCaRoot]) {
      const file = join(tmp.dir, `${sha1(r.der)}.pem`)
      writeFileSync(file, toPemBlock('CERTIFICATE', r.der))
      const c = await makeCert('CN=node-x', { issuer: r })
      await expect(attest([c.der], c.key, undefined, await create(file)).result).rejects.toMatchObject({
        ...FAILED,
        message: 'x509pop: trusted CA is expired or not a CA',
      })
    }
  })

  it('verifyChain returns the intermediates used and the root, leaf excluded', () => {
    const X = (c: Cert) => new X509Certificate(Buffer.from(c.der))
    const unused = X(inter)
    expect(verifyChain(X(leaf), [unused], [X(root)], new Date(NOW)).map((c) => c.fingerprint256)).toEqual([X(root).fingerprint256])
    expect(verifyChain(X(interLeaf), [X(inter)], [X(root)], new Date(NOW)).map((c) => c.fingerprint256)).toEqual([
      X(inter).fingerprint256,
      X(root).fingerprint256,
    ])
  })

  it('follows at most eight links: seven intermediates chain, eight do not', async () => {
    const X = (c: Cert) => new X509Certificate(Buffer.from(c.der))
    const cas = [root]
    for (let i = 0; i < 8; i++) cas.push(await makeCert(`CN=level ${i}`, { ca: true, issuer: cas[cas.length - 1]! }))
    const seven = await makeCert('CN=deep', { issuer: cas[7]! })
    expect(verifyChain(X(seven), cas.slice(1, 8).reverse().map(X), [X(root)], new Date(NOW))).toHaveLength(8)
    const eight = await makeCert('CN=deeper', { issuer: cas[8]! })
    expect(() => verifyChain(X(eight), cas.slice(1).reverse().map(X), [X(root)], new Date(NOW))).toThrow(
      expect.objectContaining({ ...FAILED, message: 'x509pop: certificate does not chain to a trusted CA' }),
    )
  })

  it.each([
    { title: 'an unknown key', raw: { ca_bundle_path: 'x.pem', other: 1 } },
    { title: 'no CA bundle', raw: {} },
    { title: 'an empty CA bundle path', raw: { ca_bundle_path: '' } },
    { title: 'an empty list of CA bundles', raw: { ca_bundle_path: [] } },
  ])('rejects a config with $title', ({ raw }) => {
    expect(() => x509popServerPlugin.parseConfig(raw)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
    // the catalog reports the block's issues under its full path
    const { issues } = selectPlugins(
      { node_attestor: { cardinality: 'at_least_one', plugins: [x509popServerPlugin] } },
      { node_attestor: { x509pop: raw } },
      { baseDir: '/' },
    )
    expect(issues.length).toBeGreaterThan(0)
    for (const i of issues) expect(i.path).toMatch(/^plugins\.node_attestor\.x509pop(\.|$)/)
  })

  it('reads one or several CA bundle paths', () => {
    expect(x509popServerPlugin.parseConfig({ ca_bundle_path: 'a.pem' })).toEqual({ caBundlePaths: ['a.pem'] })
    expect(x509popServerPlugin.parseConfig({ ca_bundle_path: ['a.pem', 'b.pem'] })).toEqual({ caBundlePaths: ['a.pem', 'b.pem'] })
  })

  it('refuses to start without a readable CA bundle holding a certificate', async () => {
    const err = await create(join(tmp.dir, 'missing.pem')).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID', message: `x509pop: cannot read ca_bundle_path ${join(tmp.dir, 'missing.pem')}` })
    expect((err as IdentityError).cause).toMatchObject({ code: 'ENOENT' })
    writeFileSync(join(tmp.dir, 'empty.pem'), 'no certificate here\n')
    await expect(create(join(tmp.dir, 'empty.pem'))).rejects.toMatchObject({
      code: 'ERR_CONFIG_INVALID',
      message: 'x509pop: ca_bundle_path holds no certificate',
    })
  })

  it('rejects a malformed payload without a challenge', async () => {
    const err = await attestor.attest(new TextEncoder().encode('{"v":2}'), async () => new Uint8Array(0), {}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IdentityError)
  })
})
