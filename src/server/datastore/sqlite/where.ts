/** WHERE clauses (and their parameters) for entry and attested-node filters. */
import type { NormalizedEntryFilter, NormalizedNodeFilter } from '../internal/filters.js'
import type { Selector } from '../types.js'

/** SQL conditions joined with AND, and their named parameters. */
export interface Where {
  clauses: string[]
  params: Record<string, unknown>
}

/** Entry ids whose selectors include members of @sel (a JSON array of [type, value]), via the (type, value) index. */
// CROSS JOIN pins json_each as the outer loop (SQLite never reorders it), so every
// given selector is one lookup in the (type, value) index whatever the statistics say.
const ENTRY_SELECTOR_HITS = `SELECT s.entry_id FROM json_each(@sel) j
  CROSS JOIN entry_selectors s ON s.type = j.value ->> 0 AND s.value = j.value ->> 1`

export const selectorJson = (set: readonly Selector[]): string => JSON.stringify(set.map((s) => [s.type, s.value]))

export function entryWhere(f: NormalizedEntryFilter): Where {
  const clauses: string[] = []
  const params: Record<string, unknown> = {}
  if (f.spiffeId !== undefined) {
    clauses.push('e.spiffe_id = @spiffeId')
    params.spiffeId = f.spiffeId
  }
  if (f.parentId !== undefined) {
    clauses.push('e.parent_id = @parentId')
    params.parentId = f.parentId
  }
  if (f.parentIds !== undefined) {
    // one lookup in the parent_id index per given parent (json_each as the outer loop)
    clauses.push('e.parent_id IN (SELECT value FROM json_each(@parentIds))')
    params.parentIds = JSON.stringify(f.parentIds)
  }
  if (f.hint !== undefined) {
    clauses.push('e.hint = @hint')
    params.hint = f.hint
  }
  if (f.federatesWith !== undefined) {
    clauses.push('EXISTS (SELECT 1 FROM entry_federates_with fw WHERE fw.entry_id = e.id AND fw.trust_domain = @fed)')
    params.fed = f.federatesWith
  }
  if (f.selectors !== undefined) {
    const n = f.selectors.set.length
    const withSet = (): void => {
      params.sel = selectorJson(f.selectors?.set ?? [])
      params.n = n
    }
    switch (f.selectors.match) {
      case 'any':
        if (n === 0) clauses.push('0')
        else {
          clauses.push(`e.id IN (${ENTRY_SELECTOR_HITS})`)
          withSet()
        }
        break
      case 'superset':
        if (n > 0) {
          clauses.push(`e.id IN (${ENTRY_SELECTOR_HITS} GROUP BY s.entry_id HAVING COUNT(*) = @n)`)
          withSet()
        }
        break
      case 'exact':
        if (n === 0) clauses.push('e.selector_count = 0')
        else {
          clauses.push(`e.selector_count = @n AND e.id IN (${ENTRY_SELECTOR_HITS} GROUP BY s.entry_id HAVING COUNT(*) = @n)`)
          withSet()
        }
        break
      case 'subset':
        // Candidates come from the (type, value) index; an entry qualifies when every one of its selectors was hit.
        if (n === 0) clauses.push('0')
        else {
          clauses.push(
            `e.selector_count > 0 AND e.id IN (${ENTRY_SELECTOR_HITS} JOIN entries x ON x.id = s.entry_id
              GROUP BY s.entry_id HAVING COUNT(*) = MAX(x.selector_count))`,
          )
          withSet()
        }
        break
    }
  }
  return { clauses, params }
}

export function nodeWhere(f: NormalizedNodeFilter): Where {
  const clauses: string[] = []
  const params: Record<string, unknown> = {}
  if (f.attestor !== undefined) {
    clauses.push('n.attestor = @attestor')
    params.attestor = f.attestor
  }
  if (f.banned !== undefined) {
    clauses.push('n.banned = @banned')
    params.banned = f.banned ? 1 : 0
  }
  if (f.expiresBefore !== undefined) {
    clauses.push('n.expires_at < @expiresBefore')
    params.expiresBefore = f.expiresBefore
  }
  if (f.selectors !== undefined && f.selectors.length > 0) {
    clauses.push(`n.agent_id IN (SELECT s.agent_id FROM json_each(@sel) j
      CROSS JOIN node_selectors s ON s.type = j.value ->> 0 AND s.value = j.value ->> 1
      GROUP BY s.agent_id HAVING COUNT(*) = @n)`)
    params.sel = selectorJson(f.selectors)
    params.n = f.selectors.length
  }
  return { clauses, params }
}
