import { X509Certificate } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { serialOf } from '../../../../src/server/ca/manager.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { tempDir } from '../../../helpers/temp.js'
import { requireTools } from '../../../helpers/tools.js'

const node = (der: Uint8Array) => new X509Certificate(der).serialNumber.toLowerCase()

describe('serialOf', () => {
  it('reads the serial from the DER exactly as node prints it (our CA and leaves)', async () => {
    const td = TrustDomain.fromString('example.org')
    const ca = generateKeyPair('ec-p256')
    const signer = new KeyObjectSigner(ca.privateKey)
    const now = Date.now()
    const caCert = await createCaCertificate({
      trustDomain: td,
      publicKey: ca.publicKey,
      signer,
      notBefore: new Date(now - 1000),
      notAfter: new Date(now + 3_600_000),
    })
    expect(serialOf(caCert)).toBe(node(caCert))
    const leafKey = generateKeyPair('ec-p256').publicKey
    for (let i = 0; i < 200; i++) {
      const leaf = await createX509Svid({
        spiffeId: SpiffeId.fromPath(td, `/w${i}`),
        publicKey: leafKey,
        signer,
        issuer: { certificate: caCert },
        notAfter: new Date(now + 60_000),
      })
      expect(serialOf(leaf)).toBe(node(leaf))
    }
  })

  it.runIf(requireTools('openssl'))('matches node for v1 certificates and small or zero-padded serials', () => {
    const t = tempDir('wser-')
    try {
      for (const [i, serial] of ['0x01', '0x7f', '0x80', '0x00ff00', '0x0102030405060708090a0b0c0d0e0f1011'].entries()) {
        const out = join(t.dir, `c${i}.pem`)
        execFileSync(
          'openssl',
          [
            'req',
            '-x509',
            '-newkey',
            'ec',
            '-pkeyopt',
            'ec_paramgen_curve:P-256',
            '-nodes',
            '-keyout',
            join(t.dir, `k${i}`),
            '-out',
            out,
            '-subj',
            '/CN=s',
            '-days',
            '1',
            '-set_serial',
            serial,
          ],
          { stdio: 'ignore' },
        )
        const der = new Uint8Array(new X509Certificate(readFileSync(out)).raw)
        expect(serialOf(der)).toBe(node(der))
      }
    } finally {
      t.cleanup()
    }
  })
})
