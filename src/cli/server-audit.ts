/**
 * The server's audit log, composed for `warrant server run` from `[audit]`:
 * src/audit's AuditLog in its own SQLite file, checkpoints signed by the P-256
 * key `server-audit-checkpoint` of the server's key manager (created on first
 * use; with PKCS#11, generated in the token and never extractable). The server
 * takes it as its `ServerAuditSink` (src/server/audit/server-audit.ts).
 */
import { openSignedAuditLog } from './audit-composition.js'
import type { Logger } from '../common/log/logger.js'
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
  const auditLog = await openSignedAuditLog({
    ...cfg,
    origin: serverAuditOrigin(td),
    keyId: SERVER_AUDIT_CHECKPOINT_KEY_ID,
    keyManager: km,
    owner: 'server',
    log,
  })
  // The server's event type is a subset of the log's: this assignment is the compile-time check that they fit.
  const sink: ServerAuditSink & { close(): Promise<void> } = auditLog
  return sink
}
