/**
 * What the PostgreSQL datastore's change feed records: one row per changed
 * record (entry, node standing, bundle, revocation, and the kv namespaces
 * other servers must follow), written in the transaction of the change.
 */
import type { DataStoreChangeKind } from '../types.js'

/** A change as an operation records it; the sequence number and time are assigned at commit. */
export interface ChangeRecord {
  kind: DataStoreChangeKind
  key: string
  op: 'put' | 'delete'
}

/** The kv namespaces whose changes the feed carries, and under which kind. */
export const KV_CHANGE_KINDS: Readonly<Record<string, DataStoreChangeKind>> = {
  bounds: 'bounds',
  federation: 'federation',
  tasks: 'task',
}

export function changeOfKv(namespace: string, key: string, op: 'put' | 'delete'): ChangeRecord | undefined {
  const kind = Object.hasOwn(KV_CHANGE_KINDS, namespace) ? KV_CHANGE_KINDS[namespace] : undefined
  return kind === undefined ? undefined : { kind, key, op }
}
