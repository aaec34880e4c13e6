import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { TrustBundles } from '../../../../src/agent/manager/trust-bundles.js'
import { KeyObjectSigner, SpiffeBundle, TrustDomain } from '../../../../src/spiffe/index.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

const TD = TrustDomain.fromString('example.org')
const doc = (td: string, kid = 'k1') => ({
  trustDomain: td,
  document: SpiffeBundle.from({
    trustDomain: TrustDomain.fromString(td),
    jwtAuthorities: [[kid, new KeyObjectSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey).publicKey.export({ format: 'jwk' })]],
  }).marshal(),
  sequence: 1,
})

describe('TrustBundles', () => {
  it('takes the local bundle of its trust domain only, and reports a change only when it differs', () => {
    const log = captureLogger()
    const b = new TrustBundles({ trustDomain: TD, log })
    expect(b.localWorkload.jwks).toBe('{"keys":[]}')
    expect(b.applyLocal(doc('other.test'))).toBe(false)
    expect(b.applyLocal({ trustDomain: 'Not A Domain!', document: '{}', sequence: 1 })).toBe(false)
    expect(b.applyLocal({ trustDomain: 'example.org', document: 'not json', sequence: 1 })).toBe(false)
    expect(b.local).toBeUndefined()
    const d = doc('example.org')
    expect(b.applyLocal(d)).toBe(true)
    expect(b.applyLocal(d)).toBe(false)
    expect(JSON.parse(b.localWorkload.jwks).keys[0].kid).toBe('k1')
    expect(b.set.getJwtBundleForTrustDomain(TD)).toBeDefined()
    expect(log.lines.map((l) => l.msg)).toEqual([
      'Ignoring local bundle of another trust domain',
      'Ignoring bundle with an invalid trust domain',
      'Ignoring invalid local bundle',
    ])
  })

  it('replaces the federated set, skipping its own trust domain and invalid documents', () => {
    const b = new TrustBundles({ trustDomain: TD, log: captureLogger() })
    const partner = doc('partner.test')
    expect(b.applyFederated([partner, doc('example.org'), { trustDomain: 'bad.test', document: 'x', sequence: 1 }])).toBe(true)
    expect(b.federated('partner.test')?.trustDomainId).toBe('spiffe://partner.test')
    expect(b.federated('example.org')).toBeUndefined()
    expect(b.federated('bad.test')).toBeUndefined()
    expect(b.applyFederated([partner])).toBe(false)
    expect(b.applyFederated([])).toBe(true)
    expect(b.federated('partner.test')).toBeUndefined()
    expect(() => b.set.getJwtBundleForTrustDomain(TrustDomain.fromString('partner.test'))).toThrow()
  })
})
