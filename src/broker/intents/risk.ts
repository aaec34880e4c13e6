/**
 * The risk engine of declared intents: pure (no I/O, no clock of its own), so
 * it is tested alone and a decision can be replayed from its inputs.
 *
 * risk = clamp(base + Σ factor weights, 0, 1), where each factor is one rule
 * that matched: the action's class and the resource's class (first matching
 * rule of each list, in config order), the node's attestation strength, the
 * time of day (outside the UTC window), the agent's recent history (refusals,
 * denials, mismatches, received signals; capped) and the declared risk
 * (weighted, and only ever added: an agent cannot lower its own risk).
 *
 * The decision, first that applies: a forbidding rule (action or resource
 * rule with `forbid`, or the namespace's `forbidden_actions`) refuses; a risk
 * at or above `refuse_at` refuses; a step-up standing for the agent (a Shared
 * Signal's `step_up` action, src/broker/step-ups.ts; a factor `step_up:<id>`
 * naming the signal, weight 0) routes it to a human whatever its risk
 * (`human:step_up:<event>:<jti>`); a rule that always wants a human (action or
 * resource rule with `human`, the namespace's `human_actions`, a time window
 * with `outside_requires_human`) routes it to one; a risk above the
 * namespace's (else the global) `max_autonomous_risk` routes it to one;
 * otherwise it is approved automatically. `rule` names what decided.
 */
import type { RiskFactor } from './contract.js'

export type IntentDecision = 'auto-approve' | 'needs-human' | 'refuse'

/** A rule on an action or resource class: a glob (`*` matches any run of characters, including `/` and `:`). */
export interface ClassRule {
  readonly match: string
  /** Added to the risk when the rule matches (may be negative). */
  readonly weight: number
  /** Always needs a human, whatever the risk. */
  readonly human: boolean
  /** Never allowed. */
  readonly forbid: boolean
}

/** Per SPIFFE ID prefix (the longest matching prefix applies). */
export interface NamespaceRule {
  readonly prefix: string
  readonly maxAutonomousRisk?: number
  /** Action globs that always need a human under this prefix. */
  readonly humanActions: readonly string[]
  /** Action globs never allowed under this prefix. */
  readonly forbiddenActions: readonly string[]
  /** The approver group its intents are routed to. */
  readonly approverGroup?: string
  /** Added to the risk of every intent under this prefix. */
  readonly weight: number
}

export interface RiskPolicy {
  readonly baseRisk: number
  /** Intents whose risk is above it need a human (a namespace may set its own). */
  readonly maxAutonomousRisk: number
  /** Intents whose risk reaches it are refused outright; undefined: never by score alone. */
  readonly refuseAt?: number
  /** How much of the declared risk counts (0..1). */
  readonly declaredRiskWeight: number
  readonly actions: readonly ClassRule[]
  readonly resources: readonly ClassRule[]
  readonly namespaces: readonly NamespaceRule[]
  /** Weight per node attestation kind (`tpm`, `join_token`, ...); `unknown` when the broker cannot tell. */
  readonly nodeAttestation: Readonly<Record<string, number>>
  /** UTC working window, minutes since midnight (start may be after end: the window spans midnight). */
  readonly hours?: { readonly start: number; readonly end: number; readonly outsideWeight: number; readonly outsideRequiresHuman: boolean }
  readonly history: {
    readonly refusalWeight: number
    readonly denialWeight: number
    readonly mismatchWeight: number
    readonly signalWeight: number
    /** Cap of the history's total contribution. */
    readonly max: number
  }
  readonly defaultApproverGroup: string
}

/** The agent's recent history over the configured window. */
export interface RiskHistory {
  /** Intents of this agent refused by a rule. */
  readonly refusals: number
  /** Intents of this agent denied by a human. */
  readonly denials: number
  /** Outcome reports that did not match what the agent declared. */
  readonly mismatches: number
  /** Shared Signals received about this agent. */
  readonly signals: number
}

/** A step-up standing for the agent (src/broker/step-ups.ts): its next intent needs a human. */
export interface RiskStepUp {
  readonly id: number
  /** The signal it came from, compact: `<event>:<jti>` (`signalRef`). */
  readonly signal: string
  /** Its reason in full (`signal <event> <jti> from <issuer> (rule N)`). */
  readonly reason: string
}

export interface RiskInput {
  readonly agent: string
  readonly action: string
  readonly resource: string
  readonly declaredRisk?: number
  /** The node's attestation kind, when the broker knows it. */
  readonly nodeAttestation?: string
  /** Unix seconds (only its UTC time of day is used). */
  readonly nowSec: number
  readonly history: RiskHistory
  /** Step-ups standing for the agent, oldest first. */
  readonly stepUps?: readonly RiskStepUp[]
}

export interface RiskAssessment {
  /** 0..1, rounded to 4 decimals. */
  readonly risk: number
  readonly factors: readonly RiskFactor[]
  readonly decision: IntentDecision
  /** The rule that decided (`forbid:action:db:*`, `threshold:0.5`, `human:namespace:spiffe://td/ops/`, ...). */
  readonly rule: string
  /** The autonomy threshold that applied. */
  readonly threshold: number
  readonly approverGroup: string
}

const globCache = new Map<string, RegExp>()

/** Does `value` match the glob `pattern` (`*` = any run of characters; everything else literal)? */
export function globMatch(pattern: string, value: string): boolean {
  let re = globCache.get(pattern)
  if (re === undefined) {
    re = new RegExp(
      `^${pattern
        .split('*')
        .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
      's',
    )
    if (globCache.size > 1024) globCache.clear()
    globCache.set(pattern, re)
  }
  return re.test(value)
}

const round4 = (n: number): number => Math.round(n * 10_000) / 10_000
const clamp01 = (n: number): number => (n < 0 ? 0 : n > 1 ? 1 : n)

/** The namespace rule of `agent`: the longest prefix that covers it. */
export function namespaceFor(policy: Pick<RiskPolicy, 'namespaces'>, agent: string): NamespaceRule | undefined {
  let best: NamespaceRule | undefined
  for (const n of policy.namespaces) if (agent.startsWith(n.prefix) && (best === undefined || n.prefix.length > best.prefix.length)) best = n
  return best
}

/** Minutes since midnight UTC of a Unix time. */
export function utcMinutes(nowSec: number): number {
  return Math.floor((((nowSec % 86_400) + 86_400) % 86_400) / 60)
}

function inWindow(min: number, start: number, end: number): boolean {
  return start <= end ? min >= start && min < end : min >= start || min < end
}

/** Assesses one intent against a policy. Pure and total: every input gives an answer. */
export function assessRisk(policy: RiskPolicy, input: RiskInput): RiskAssessment {
  const factors: RiskFactor[] = []
  const add = (rule: string, weight: number, detail: string) => {
    if (weight !== 0 && Number.isFinite(weight)) factors.push({ rule, weight: round4(weight), detail })
  }
  add('base', policy.baseRisk, 'base risk of any intent')

  const ns = namespaceFor(policy, input.agent)
  const actionRule = policy.actions.find((r) => globMatch(r.match, input.action))
  const resourceRule = policy.resources.find((r) => globMatch(r.match, input.resource))
  if (actionRule) add(`action:${actionRule.match}`, actionRule.weight, `action ${input.action}`)
  if (resourceRule) add(`resource:${resourceRule.match}`, resourceRule.weight, `resource ${input.resource}`)
  if (ns) add(`namespace:${ns.prefix}`, ns.weight, `agent under ${ns.prefix}`)

  const node = input.nodeAttestation ?? 'unknown'
  const nodeWeight = policy.nodeAttestation[node] ?? policy.nodeAttestation['unknown'] ?? 0
  add(`node:${node}`, nodeWeight, input.nodeAttestation === undefined ? 'node attestation not known to the broker' : `node attested by ${node}`)

  let outside = false
  if (policy.hours) {
    const min = utcMinutes(input.nowSec)
    outside = !inWindow(min, policy.hours.start, policy.hours.end)
    if (outside) add('hours:outside', policy.hours.outsideWeight, 'outside the UTC working window')
  }

  const h = input.history
  const hp = policy.history
  const parts: [string, number, number][] = [
    ['refusals', h.refusals, hp.refusalWeight],
    ['denials', h.denials, hp.denialWeight],
    ['mismatches', h.mismatches, hp.mismatchWeight],
    ['signals', h.signals, hp.signalWeight],
  ]
  let budget = hp.max
  for (const [name, count, w] of parts) {
    if (count <= 0 || w <= 0 || budget <= 0) continue
    const weight = Math.min(count * w, budget)
    budget -= weight
    add(`history:${name}`, weight, `${count} recent ${name}`)
  }

  if (input.declaredRisk !== undefined && policy.declaredRiskWeight > 0) {
    add('declared', clamp01(input.declaredRisk) * policy.declaredRiskWeight, `declared risk ${input.declaredRisk}`)
  }

  // A step-up adds no risk (it is not a score): it is listed so the approver sees which signal asks for them.
  for (const s of input.stepUps ?? []) factors.push({ rule: `step_up:${s.id}`, weight: 0, detail: `step-up required by ${s.reason}`.slice(0, 512) })

  const risk = round4(clamp01(factors.reduce((s, f) => s + f.weight, 0)))
  const threshold = ns?.maxAutonomousRisk ?? policy.maxAutonomousRisk
  const approverGroup = ns?.approverGroup ?? policy.defaultApproverGroup
  const out = (decision: IntentDecision, rule: string): RiskAssessment => ({ risk, factors, decision, rule, threshold, approverGroup })

  if (actionRule?.forbid) return out('refuse', `forbid:action:${actionRule.match}`)
  if (resourceRule?.forbid) return out('refuse', `forbid:resource:${resourceRule.match}`)
  const nsForbid = ns?.forbiddenActions.find((g) => globMatch(g, input.action))
  if (ns && nsForbid !== undefined) return out('refuse', `forbid:namespace:${ns.prefix}:${nsForbid}`)
  if (policy.refuseAt !== undefined && risk >= policy.refuseAt) return out('refuse', `refuse_at:${policy.refuseAt}`)
  const stepUp = input.stepUps?.[0]
  if (stepUp !== undefined) return out('needs-human', `human:step_up:${stepUp.signal}`)
  if (actionRule?.human) return out('needs-human', `human:action:${actionRule.match}`)
  if (resourceRule?.human) return out('needs-human', `human:resource:${resourceRule.match}`)
  const nsHuman = ns?.humanActions.find((g) => globMatch(g, input.action))
  if (ns && nsHuman !== undefined) return out('needs-human', `human:namespace:${ns.prefix}:${nsHuman}`)
  if (outside && policy.hours?.outsideRequiresHuman) return out('needs-human', 'human:hours:outside')
  if (risk > threshold) return out('needs-human', `threshold:${ns?.maxAutonomousRisk !== undefined ? `${ns.prefix}:` : ''}${threshold}`)
  return out('auto-approve', `threshold:${ns?.maxAutonomousRisk !== undefined ? `${ns.prefix}:` : ''}${threshold}`)
}
