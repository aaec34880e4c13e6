/**
 * Opening a process's audit log, as the server, the broker and the gateway do:
 * src/audit's AuditLog in its own SQLite file, checkpoints signed by a P-256
 * key of the process's key manager (created on first use; with PKCS#11,
 * generated in the token and never extractable), the verifier key logged at
 * open.
 */
import { ecdsaNoteSigner, verifierKey } from '../audit/checkpoint.js'
import { AuditLog } from '../audit/store/audit-log.js'
import { F, type Logger } from '../common/log/logger.js'
import { isIdentityError } from '../errors/identity-error.js'
import type { KeyManager } from '../keymanager/key-manager.js'

export async function openSignedAuditLog(o: {
  path: string
  checkpointIntervalMs: number
  /** The checkpoint origin line (and the verifier key's name), `<td>/warrant/<process>-audit`. */
  origin: string
  /** The checkpoint key's id in `keyManager`. */
  keyId: string
  keyManager: KeyManager
  /** Whose log, for the log lines: `server`, `broker`, `gateway`. */
  owner: string
  log: Logger
}): Promise<AuditLog> {
  let key
  try {
    key = await o.keyManager.getKey(o.keyId)
  } catch (err) {
    if (!isIdentityError(err) || err.code !== 'ERR_KEY_NOT_FOUND') throw err
    key = await o.keyManager.generateKey(o.keyId, 'ec-p256')
    o.log.info({ [F.KEY_ID]: o.keyId }, `Generated the ${o.owner} audit checkpoint key`)
  }
  const auditLog = AuditLog.open({
    path: o.path,
    origin: o.origin,
    signer: ecdsaNoteSigner(o.origin, key),
    checkpointIntervalMs: o.checkpointIntervalMs,
    log: o.log.child({ [F.SUBSYSTEM]: 'audit' }),
  })
  const owner = `${o.owner.charAt(0).toUpperCase()}${o.owner.slice(1)}`
  o.log.info({ [F.PATH]: o.path, origin: o.origin, verifier_key: verifierKey(o.origin, key.publicKey) }, `${owner} audit log open`)
  return auditLog
}
