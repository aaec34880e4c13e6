import { describe, expect, it } from 'vitest'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { FederatedBundles } from '../../../../src/server/bundle/federated.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { bundleOf, makeRoot } from '../federation/pki.js'

describe('FederatedBundles.listFor', () => {
  it('returns the stored bundles of exactly the given trust domains, never the local one', async () => {
    const ds = createMemoryDataStore()
    const federated = new FederatedBundles({ ds, localTrustDomain: TrustDomain.fromString('local.test'), log: nullLogger })
    for (const td of ['a.test', 'b.test', 'c.test']) await federated.put(bundleOf(td, [await makeRoot(td)], { sequence: 1 }))
    await ds.bundles.put({ trustDomain: 'local.test', document: '{"keys":[]}', sequence: 1 })
    const tds = async (want: string[]) => (await federated.listFor(new Set(want))).map((b) => b.trustDomain)
    expect(await tds(['a.test', 'c.test'])).toEqual(['a.test', 'c.test'])
    expect(await tds(['b.test', 'unknown.test', 'local.test'])).toEqual(['b.test'])
    expect(await tds([])).toEqual([])
    expect((await federated.list()).map((b) => b.trustDomain)).toEqual(['a.test', 'b.test', 'c.test'])
  })
})
