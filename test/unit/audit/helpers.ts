/** Shared fixtures of the audit tests: a memory-held checkpoint key, sample events, a log in a temp dir. */
import { join } from 'node:path'
import { ecdsaNoteSigner, verifierKey, type AuditEventInput } from '../../../src/audit/index.js'
import { AuditLog } from '../../../src/audit/store/audit-log.js'
import { MemoryKeyManager } from '../../../src/keymanager/index.js'

export const ORIGIN = 'example.org/warrant/audit'

export async function checkpointKey(name = ORIGIN) {
  const km = new MemoryKeyManager()
  const key = await km.generateKey('audit-checkpoint', 'ec-p256')
  return { key, signer: ecdsaNoteSigner(name, key), vkey: verifierKey(name, key.publicKey) }
}

export function sampleEvent(i: number): AuditEventInput {
  const types = ['token.exchanged', 'token.renewed', 'x509_svid.issued', 'task.created', 'node_attestation.refused'] as const
  const type = types[i % types.length]!
  return {
    time: new Date(Date.UTC(2026, 11, 5, 12, 0, 0) + i * 1000).toISOString(),
    type,
    outcome: type === 'node_attestation.refused' ? 'refused' : 'success',
    ...(type === 'node_attestation.refused' ? { reason: 'ERR_JOIN_TOKEN_INVALID' } : {}),
    actor: { spiffe_id: `spiffe://example.org/agents/${i % 3 === 0 ? 'a' : 'b'}`, instance: `i-${i % 4}` },
    task_id: `task-${String(i).padStart(6, '0')}`,
    resource: ['https://api.example.org/'],
    scope: ['read'],
    delegation_depth: i % 3,
  }
}

/** A log at `<dir>/audit.db` with `n` events and checkpoints at each size in `checkpointsAt` (and none other). */
export async function buildLog(dir: string, n: number, checkpointsAt: number[], signer: Awaited<ReturnType<typeof checkpointKey>>['signer']) {
  const path = join(dir, 'audit.db')
  const log = AuditLog.open({ path, origin: ORIGIN, signer })
  for (let i = 0; i < n; i++) {
    await log.append(sampleEvent(i))
    if (checkpointsAt.includes(i + 1)) await log.checkpoint()
  }
  await log.close()
  return path
}
