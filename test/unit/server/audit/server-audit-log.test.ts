/**
 * The CLI's composition of the server's audit log (src/cli/server-audit.ts):
 * src/audit's AuditLog as the server's sink, its checkpoints signed by the key
 * `server-audit-checkpoint` of the key manager, generated once and reused.
 */
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { verifierKey } from '../../../../src/audit/checkpoint.js'
import { AuditLogReader } from '../../../../src/audit/store/log-reader.js'
import { openServerAuditLog, SERVER_AUDIT_CHECKPOINT_KEY_ID, serverAuditOrigin } from '../../../../src/cli/server-audit.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { ServerAudit } from '../../../../src/server/audit/server-audit.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { tempDir } from '../../../helpers/temp.js'

const td = TrustDomain.fromString('example.org')
const tmp = tempDir('wsal-')
afterAll(() => tmp.cleanup())

describe('openServerAuditLog', () => {
  it('creates the checkpoint key once, logs its verifier key, and takes the server events', async () => {
    const km = new MemoryKeyManager()
    const log = captureLogger()
    const path = join(tmp.dir, 'server-audit.sqlite3')
    const first = await openServerAuditLog({ path, checkpointIntervalMs: 0 }, km, td, log)
    const key = await km.getKey(SERVER_AUDIT_CHECKPOINT_KEY_ID)
    const audit = new ServerAudit({ sink: first, log })
    expect(await audit.durable({ type: 'entry.deleted', outcome: 'success', subject: 'spiffe://example.org/a', attributes: { entry_id: 'e1' } })).toBe(true)
    await first.close()
    const again = await openServerAuditLog({ path, checkpointIntervalMs: 0 }, km, td, log)
    await again.close()
    expect((await km.getKey(SERVER_AUDIT_CHECKPOINT_KEY_ID)).publicKey.equals(key.publicKey)).toBe(true)
    expect(log.lines.filter((l) => l.msg === 'Generated the server audit checkpoint key')).toHaveLength(1)
    const open = log.lines.filter((l) => l.msg === 'Server audit log open')
    expect(open[0]!.fields).toMatchObject({ origin: 'example.org/warrant/server-audit', verifier_key: verifierKey(serverAuditOrigin(td), key.publicKey) })
    const r = AuditLogReader.open(path)
    try {
      expect(r.tail(10).map((x) => JSON.parse(x.event) as { type: string })).toEqual([expect.objectContaining({ type: 'entry.deleted' })])
    } finally {
      r.close()
    }
  })

  it('a key manager failure other than a missing key stops the start (no key generated over it)', async () => {
    const km = new MemoryKeyManager()
    km.getKey = () => Promise.reject(new IdentityError('ERR_HSM_UNAVAILABLE', 'token removed'))
    await expect(openServerAuditLog({ path: join(tmp.dir, 'x.sqlite3'), checkpointIntervalMs: 0 }, km, td, captureLogger())).rejects.toMatchObject({
      code: 'ERR_HSM_UNAVAILABLE',
    })
    expect(await km.listKeys()).toEqual([])
  })
})
