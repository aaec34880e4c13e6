import { nullLogger } from '../../../../src/common/log/logger.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import type { JwtSignerSource } from '../../../../src/server/bounds/bounds-service.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import type { DataStore } from '../../../../src/server/datastore/types.js'
import type { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import type { FakeClock } from '../../../helpers/fake-clock.js'

/**
 * A real CaManager over a MemoryKeyManager, and a JwtSignerSource for its
 * active JWT key. CaManager does not expose that key yet, so the source reads
 * the active slot from the CA journal ('ca' in the journal store) and gets
 * the key from the key manager; the lead is asked to add `ca.jwtSigner()`.
 */
export async function caWithJwtSigner(td: TrustDomain, ds: DataStore, clock: FakeClock): Promise<{ ca: CaManager; jwtSigner: JwtSignerSource }> {
  const km = new MemoryKeyManager()
  const ca = new CaManager({
    trustDomain: td,
    keyManager: km,
    ds,
    clock,
    log: nullLogger,
    caTtlMs: 24 * 3_600_000,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  const jwtSigner: JwtSignerSource = async () => {
    const j = JSON.parse((await ds.journal.get('ca'))!) as { jwt: { keyId: string; kid: string; status: string }[] }
    const active = j.jwt.find((s) => s.status === 'active')!
    return { signer: await km.getKey(active.keyId), kid: active.kid }
  }
  return { ca, jwtSigner }
}
