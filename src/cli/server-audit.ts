/**
 * The server's audit log, composed for `warrant server run` from `[audit]`:
 * src/audit's AuditLog in its own SQLite file, checkpoints signed by the P-256
 * key `server-audit-checkpoint` of the server's key manager (created on first
 * use; with PKCS#11, generated in the token and never extractable). The server
 * takes it as its `ServerAuditSink` (src/server/audit/server-audit.ts).
 */
import { ecdsaNoteSigner, verifierKey } from '../audit/checkpoint.js'
import { AuditLog } from '../audit/store/audit-log.js'
import { F, type Logger } from '../common/log/logger.js'
import { isIdentityError } from '../errors/identity-error.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import type { ServerAuditSink } from '../server/audit/server-audit.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'

/** Key id of the server's audit checkpoint key in its key manager. */
export const SERVER_AUDIT_CHECKPOINT_KEY_ID = 'server-audit-checkpoint'

/** The checkpoint origin (and verifier key name) of a trust domain's server audit log. */
export const serverAuditOrigin = (td: TrustDomain): string => `${td.name}/warrant/server-audit`

export async function openServerAuditLog(
  cfg: { path: string; checkpointIntervalMs: number },
  km: KeyManager,
  td: TrustDomain,
  log: Logger,
): Promise<ServerAuditSink & { close(): Promise<void> }> {
  let key
  try {
    key = await km.getKey(SERVER_AUDIT_CHECKPOINT_KEY_ID)
  } catch (err) {
    if (!isIdentityError(err) || err.code !== 'ERR_KEY_NOT_FOUND') throw err
    key = await km.generateKey(SERVER_AUDIT_CHECKPOINT_KEY_ID, 'ec-p256')
    log.info({ [F.KEY_ID]: SERVER_AUDIT_CHECKPOINT_KEY_ID }, 'Generated the server audit checkpoint key')
  }
  const origin = serverAuditOrigin(td)
  const auditLog = AuditLog.open({
    path: cfg.path,
    origin,
    signer: ecdsaNoteSigner(origin, key),
    checkpointIntervalMs: cfg.checkpointIntervalMs,
    log: log.child({ [F.SUBSYSTEM]: 'audit' }),
  })
  log.info({ [F.PATH]: cfg.path, origin, verifier_key: verifierKey(origin, key.publicKey) }, 'Server audit log open')
  // The server's event type is a subset of the log's: this assignment is the compile-time check that they fit.
  const sink: ServerAuditSink & { close(): Promise<void> } = auditLog
  return sink
}
