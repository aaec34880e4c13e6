import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { generateKeyPairSync, webcrypto } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isIdentityError } from '../../../../src/errors/index.js'
import { generateKeyPair, KeyObjectSigner, type KeyPairType } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createCsr, createX509Svid, MAX_CSR_BYTES, parseCsr, parseLeafSpiffeId } from '../../../../src/spiffe/x509-svid/index.js'
import { requireTools } from '../../../helpers/tools.js'
import { tempDir } from '../../../helpers/temp.js'
import { HOUR, makeRoot, NOW, openssl, peculiarCrypto } from './pki.js'

const id = SpiffeId.fromString('spiffe://example.org/spire/agent/join_token/abc')

function csrCode(der: Uint8Array): string {
  try {
    parseCsr(der)
    return 'ok'
  } catch (err) {
    if (isIdentityError(err)) return err.code
    throw err
  }
}

async function peculiarCsr(names: Array<{ type: 'url' | 'dns'; value: string }>, alg: 'P-256' | 'P-521' = 'P-256'): Promise<Uint8Array> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: alg }, true, ['sign', 'verify'])
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'O=test',
      keys: keys as never,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names)] : [],
    },
    peculiarCrypto,
  )
  return new Uint8Array(csr.rawData)
}

describe('createCsr → parseCsr round trip', () => {
  const types: KeyPairType[] = ['ec-p256', 'ec-p384', 'rsa-2048']
  it.each(types)('%s with SPIFFE ID and DNS names', async (type) => {
    const kp = generateKeyPair(type)
    const der = await createCsr({ privateKey: kp.privateKey, spiffeId: id, dnsNames: ['agent.example.org'] })
    const parsed = parseCsr(der)
    expect(parsed.spiffeId?.toString()).toBe(id.toString())
    expect(parsed.dnsNames).toEqual(['agent.example.org'])
    expect(parsed.publicKey.equals(kp.publicKey)).toBe(true)
    // @peculiar/x509 reads it and checks its signature too.
    const p = new x509.Pkcs10CertificateRequest(der)
    expect(await p.verify(peculiarCrypto)).toBe(true)
    const san = p.extensions.find((e) => e.type === '2.5.29.17') as x509.SubjectAlternativeNameExtension
    expect(san.names.items.map((n) => n.value)).toEqual([id.toString(), 'agent.example.org'])
  })

  it('works through a Signer without the private key, and without SANs', async () => {
    const kp = generateKeyPair('ec-p256')
    const inner = new KeyObjectSigner(kp.privateKey)
    const der = await createCsr({ signer: { publicKey: kp.publicKey, sign: (d, a) => inner.sign(d, a) } })
    expect(parseCsr(der)).toMatchObject({ spiffeId: undefined, dnsNames: [] })
  })

  it('the parsed key feeds createX509Svid (server signs an agent CSR)', async () => {
    const root = await makeRoot()
    const kp = generateKeyPair('ec-p256')
    const { publicKey } = parseCsr(await createCsr({ privateKey: kp.privateKey }))
    const leaf = await createX509Svid({
      spiffeId: id,
      publicKey,
      signer: root.signer,
      issuer: { certificate: root.certificate },
      notAfter: new Date(NOW.getTime() + HOUR),
    })
    expect(parseLeafSpiffeId(leaf).equals(id)).toBe(true)
    expect(new x509.X509Certificate(leaf).publicKey.rawData).toEqual(kp.publicKey.export({ type: 'spki', format: 'der' }).buffer.slice(0))
  })

  it('accepts a CSR built by @peculiar/x509', async () => {
    expect(parseCsr(await peculiarCsr([{ type: 'url', value: id.toString() }])).spiffeId?.equals(id)).toBe(true)
  })
})

describe('parseCsr rejects', () => {
  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 })
  const cases: Array<[string, () => Promise<Uint8Array>]> = [
    [
      'a tampered signature',
      async () => {
        const der = await createCsr({ privateKey: generateKeyPair('ec-p256').privateKey, spiffeId: id })
        const bad = new Uint8Array(der)
        bad[bad.length - 3] = bad[bad.length - 3]! ^ 0x40
        return bad
      },
    ],
    [
      'a tampered SPIFFE ID',
      async () => {
        const der = Buffer.from(await createCsr({ privateKey: generateKeyPair('ec-p256').privateKey, spiffeId: id }))
        const at = der.indexOf('join_token')
        der[at] = 'J'.charCodeAt(0)
        return new Uint8Array(der)
      },
    ],
    ['a P-521 key', async () => createCsr({ privateKey: generateKeyPair('ec-p521').privateKey })],
    ['an RSA-1024 key', async () => createCsr({ privateKey: rsa1024.privateKey })],
    [
      'two URI SANs',
      async () =>
        peculiarCsr([
          { type: 'url', value: id.toString() },
          { type: 'url', value: 'spiffe://example.org/b' },
        ]),
    ],
    ['a URI SAN that is not a SPIFFE ID', async () => peculiarCsr([{ type: 'url', value: 'https://example.org/x' }])],
    ['an empty input', async () => new Uint8Array(0)],
    ['a truncated CSR', async () => (await createCsr({ privateKey: generateKeyPair('ec-p256').privateKey })).subarray(0, 60)],
    ['trailing bytes', async () => new Uint8Array([...(await createCsr({ privateKey: generateKeyPair('ec-p256').privateKey })), 0])],
    ['a certificate instead of a CSR', async () => (await makeRoot()).certificate],
    ['an oversized input', async () => new Uint8Array(MAX_CSR_BYTES + 1).fill(0x30)],
  ]
  it.each(cases)('%s with ERR_CSR_INVALID', async (_name, mk) => {
    expect(csrCode(await mk())).toBe('ERR_CSR_INVALID')
  })

  it('throws TypeError for a non-Uint8Array', () => {
    expect(() => parseCsr('abc' as never)).toThrow(TypeError)
  })
})

describe.runIf(requireTools('openssl'))('openssl agrees on CSRs', () => {
  let dir: string
  let cleanup: () => void
  beforeAll(() => ({ dir, cleanup } = tempDir('csr-')))
  afterAll(() => cleanup())

  it('openssl req -verify accepts ours, and we accept openssl-made CSRs', async () => {
    const der = await createCsr({ privateKey: generateKeyPair('ec-p384').privateKey, spiffeId: id })
    const p = join(dir, 'ours.der')
    writeFileSync(p, der)
    const out = openssl(['req', '-inform', 'DER', '-in', p, '-verify', '-noout', '-text'])
    expect(out).toContain(`URI:${id.toString()}`)
    const keyPath = join(dir, 'k.pem')
    writeFileSync(keyPath, generateKeyPair('ec-p256').privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const theirs = join(dir, 'theirs.der')
    openssl([
      'req',
      '-new',
      '-key',
      keyPath,
      '-subj',
      '/O=x',
      '-addext',
      `subjectAltName=URI:${id.toString()},DNS:a.example.org`,
      '-outform',
      'DER',
      '-out',
      theirs,
    ])
    const { readFileSync } = await import('node:fs')
    const parsed = parseCsr(new Uint8Array(readFileSync(theirs)))
    expect([parsed.spiffeId?.toString(), parsed.dnsNames]).toEqual([id.toString(), ['a.example.org']])
  })
})
