/** WHERE clauses (and their parameters) for entry and attested-node filters. */
import type { NormalizedEntryFilter, NormalizedNodeFilter } from '../internal/filters.js'
import type { Selector } from '../types.js'
import { Params, type Where } from './context.js'

/** The given selectors as a relation j(type, value): two text[] parameters. */
function selectorSet(p: Params, set: readonly Selector[]): string {
  return `unnest(${p.add(set.map((s) => s.type))}::text[], ${p.add(set.map((s) => s.value))}::text[]) AS j(type, value)`
}

/** Entry ids whose selectors include members of the set, each one lookup in the (type, value) index. */
const entryHits = (p: Params, set: readonly Selector[]): string =>
  `SELECT s.entry_id FROM ${selectorSet(p, set)} JOIN entry_selectors s ON s.type = j.type AND s.value = j.value`

export function entryWhere(f: NormalizedEntryFilter): Where {
  const p = new Params()
  const clauses: string[] = []
  if (f.spiffeId !== undefined) clauses.push(`e.spiffe_id = ${p.add(f.spiffeId)}`)
  if (f.parentId !== undefined) clauses.push(`e.parent_id = ${p.add(f.parentId)}`)
  if (f.parentIds !== undefined) clauses.push(`e.parent_id = ANY(${p.add(f.parentIds)}::text[])`)
  if (f.hint !== undefined) clauses.push(`e.hint = ${p.add(f.hint)}`)
  if (f.federatesWith !== undefined) clauses.push(`e.federates_with @> ARRAY[${p.add(f.federatesWith)}::text]`)
  if (f.selectors !== undefined) {
    const { set, match } = f.selectors
    const n = set.length
    switch (match) {
      case 'any':
        clauses.push(n === 0 ? 'FALSE' : `e.id IN (${entryHits(p, set)})`)
        break
      case 'superset':
        if (n > 0) clauses.push(`e.id IN (${entryHits(p, set)} GROUP BY s.entry_id HAVING COUNT(*) = ${p.add(n)})`)
        break
      case 'exact':
        if (n === 0) clauses.push('e.selector_count = 0')
        else {
          const np = p.add(n)
          clauses.push(`e.selector_count = ${np} AND e.id IN (${entryHits(p, set)} GROUP BY s.entry_id HAVING COUNT(*) = ${np})`)
        }
        break
      case 'subset':
        // Candidates come from the (type, value) index; an entry qualifies when every one of its selectors was hit.
        clauses.push(
          n === 0
            ? 'FALSE'
            : `e.selector_count > 0 AND e.id IN (${entryHits(p, set)} JOIN entries x ON x.id = s.entry_id
              GROUP BY s.entry_id HAVING COUNT(*) = MAX(x.selector_count))`,
        )
        break
    }
  }
  return { clauses, params: p }
}

export function nodeWhere(f: NormalizedNodeFilter): Where {
  const p = new Params()
  const clauses: string[] = []
  if (f.attestor !== undefined) clauses.push(`n.attestor = ${p.add(f.attestor)}`)
  if (f.banned !== undefined) clauses.push(`n.banned = ${p.add(f.banned)}`)
  if (f.expiresBefore !== undefined) clauses.push(`n.expires_at < ${p.add(f.expiresBefore)}`)
  if (f.selectors !== undefined && f.selectors.length > 0) {
    clauses.push(`n.agent_id IN (SELECT s.agent_id FROM ${selectorSet(p, f.selectors)}
      JOIN node_selectors s ON s.type = j.type AND s.value = j.value
      GROUP BY s.agent_id HAVING COUNT(*) = ${p.add(f.selectors.length)})`)
  }
  return { clauses, params: p }
}
