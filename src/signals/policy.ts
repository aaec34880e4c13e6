/**
 * The receiver's response policy: what warrant does when a verified signal
 * arrives. Declarative config, validated in one pass (every problem with its
 * path), then a pure decision per signal. Rules are tried in order; the first
 * whose event type, subject match and minimum confidence all hold decides:
 *
 * - `revoke` at one level, the target read from the signal's subject:
 *   `token` (a `jwt_id` of this broker's issuer), `chain` (that token's tree,
 *   else every token the SPIFFE ID acted on), `instance` (the SPIFFE ID),
 *   `task` (the task ID), `prefix` (the rule's `prefix`, else the SPIFFE ID
 *   and everything under it);
 * - `quarantine` a prefix (the rule's, else the subject's SPIFFE ID) until an
 *   operator releases it or, with `duration`, for that long: no new tokens;
 * - `narrow` a prefix (the rule's, else the subject's SPIFFE ID) for
 *   `duration`: its agents may then be given only the rule's `scopes` (and
 *   `resources`, when listed) of what their bounds allow;
 * - `step_up` an agent (`target = "instance"`: the subject's SPIFFE ID) or a
 *   prefix (`target = "prefix"`: the rule's `prefix`, else the subject's
 *   SPIFFE ID and everything under it): the agent's next intent goes to a
 *   human whatever its risk, and no plain token is issued to it meanwhile;
 *   one human approval satisfies it (for that agent), unless
 *   `clear_on_approval = false`, which holds it until `duration` ends;
 *   `duration`, when given, ends it in any case (src/broker/step-ups.ts);
 * - `record`: nothing but the record.
 *
 * A subject-derived prefix is never a bare trust domain, and a subject that
 * lacks what the level needs is recorded, not acted on. Stream events
 * (`verification`, `stream-updated`) never match a rule. No rule matching is
 * `record` too. Pure.
 *
 * ```toml
 * [[broker.signals.policy]]
 * event = "credential-compromise"              # a name or the full event type URI; or a list
 * match = { prefix = "spiffe://corp.example/agents/" }   # one of spiffe_id, prefix, instance, task
 * min_confidence = 0.8                         # optional; a signal without confidence then never matches
 * action = "revoke"
 * level = "instance"                           # token | instance | task | chain | prefix
 *
 * [[broker.signals.policy]]
 * event = "credential-change"
 * match = { prefix = "spiffe://corp.example/agents/" }
 * action = "step_up"
 * target = "instance"                          # instance | prefix (then `prefix`, default the subject's SPIFFE ID)
 * duration = "4h"                              # optional; required with clear_on_approval = false
 * ```
 */
import { z } from 'zod'
import { duration } from '../common/config/duration.js'
import { parseWith } from '../common/config/issues.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { REVOCATION_KINDS, underPrefix, type RevocationKind } from '../tokens/revocation.js'
import { EVENT_TYPES, STREAM_EVENT_TYPES, type SetEventType } from './event-types.js'
import type { VerifiedSet } from './set.js'
import type { AgentSubject } from './subject.js'

/** Short names of the event types a rule may name (the part after `event-type/`). */
const EVENT_NAMES: Readonly<Record<string, SetEventType>> = Object.fromEntries(
  Object.values(EVENT_TYPES)
    .filter((t) => !STREAM_EVENT_TYPES.includes(t))
    .flatMap((t) => [
      [t, t],
      [t.slice(t.lastIndexOf('/') + 1), t],
    ]),
)

/** An event type name or URI, or a non-empty list of them; always a list of URIs. */
const eventTypes = () =>
  z.union([z.string(), z.array(z.string())]).transform((v, ctx) => {
    const names = typeof v === 'string' ? [v] : v
    if (names.length === 0) ctx.addIssue({ code: 'custom', message: 'must name at least one event type' })
    const out: SetEventType[] = []
    for (const n of names) {
      const t = EVENT_NAMES[n]
      if (t !== undefined) out.push(t)
      else
        ctx.addIssue({
          code: 'custom',
          message: `unknown event type "${n.slice(0, 128)}" (one of ${Object.keys(EVENT_NAMES)
            .filter((k) => !k.includes('/'))
            .join(', ')}, or its URI)`,
        })
    }
    return out
  })

const spiffeIdString = (what: string) => z.string().refine((v) => SpiffeId.isValid(v), `must be a SPIFFE ID (${what})`)
/** A prefix: a SPIFFE ID, optionally written with a trailing slash (dropped). */
const prefixString = () =>
  z
    .string()
    .transform((v) => (v.endsWith('/') ? v.slice(0, -1) : v))
    .refine((v) => SpiffeId.isValid(v), 'must be a SPIFFE ID (a prefix)')
/** What a `step_up` rule holds: one agent (the subject's SPIFFE ID) or a prefix. */
export const STEP_UP_TARGETS = ['instance', 'prefix'] as const
export type StepUpTarget = (typeof STEP_UP_TARGETS)[number]

const boundedId = () => z.string().min(1, 'must not be empty').max(2048)

const MatchSchema = z
  .object({
    spiffe_id: spiffeIdString('exact match').optional(),
    prefix: prefixString().optional(),
    instance: boundedId().optional(),
    task: boundedId().optional(),
  })
  .strict()
  .refine((m) => Object.values(m).filter((v) => v !== undefined).length === 1, 'exactly one of spiffe_id, prefix, instance, task')

const common = {
  event: eventTypes(),
  match: MatchSchema,
  min_confidence: z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1').optional(),
}

const RuleSchema = z.discriminatedUnion('action', [
  z
    .object({ ...common, action: z.literal('revoke'), level: z.enum(REVOCATION_KINDS), prefix: prefixString().optional() })
    .strict()
    .superRefine((r, ctx) => {
      if (r.prefix !== undefined && r.level !== 'prefix') ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'only for level = "prefix"' })
    }),
  z
    .object({
      ...common,
      action: z.literal('quarantine'),
      prefix: prefixString().optional(),
      duration: duration()
        .refine((ms) => ms >= 1000, 'must be at least 1s')
        .optional(),
    })
    .strict(),
  z
    .object({
      ...common,
      action: z.literal('narrow'),
      prefix: prefixString().optional(),
      /** The scopes that remain allowed (may be empty: none). */
      scopes: z.array(z.string().min(1).max(256)).max(256),
      /** The resources that remain allowed; absent: not narrowed. */
      resources: z.array(z.string().min(1).max(2048)).max(256).optional(),
      duration: duration()
        .refine((ms) => ms >= 1000, 'must be at least 1s')
        .refine((ms) => ms <= 30 * 86_400_000, 'must be at most 30 days'),
    })
    .strict(),
  z
    .object({
      ...common,
      action: z.literal('step_up'),
      /** `instance`: the subject's SPIFFE ID exactly; `prefix`: the rule's `prefix`, else the subject's SPIFFE ID and everything under it. */
      target: z.enum(STEP_UP_TARGETS),
      prefix: prefixString().optional(),
      /** Ends the step-up this long after the signal (satisfied or not); absent: until satisfied or cleared by an operator. */
      duration: duration()
        .refine((ms) => ms >= 1000, 'must be at least 1s')
        .refine((ms) => ms <= 30 * 86_400_000, 'must be at most 30 days')
        .optional(),
      /** A human approving one intent of the agent satisfies the step-up (default); false: every intent goes to a human until `duration` ends. */
      clear_on_approval: z.boolean().default(true),
    })
    .strict()
    .superRefine((r, ctx) => {
      if (r.prefix !== undefined && r.target !== 'prefix') ctx.addIssue({ code: 'custom', path: ['prefix'], message: 'only for target = "prefix"' })
      if (!r.clear_on_approval && r.duration === undefined)
        ctx.addIssue({ code: 'custom', path: ['duration'], message: 'required when clear_on_approval = false (the step-up would never end by itself)' })
    }),
  z.object({ ...common, action: z.literal('record') }).strict(),
])

/** The rules, in order (embedded as `[[broker.signals.policy]]` in the broker's config schema, so it is checked in the same pass). */
export const SignalPolicySchema = z.array(RuleSchema).max(1000, 'at most 1000 rules')

export type SignalRule = z.output<typeof RuleSchema>

/** A validated policy (the rules in order). */
export interface SignalPolicy {
  readonly rules: readonly SignalRule[]
}

/** Parses the policy's rules (an array, e.g. `[[broker.signals.policy]]`); throws ERR_CONFIG_INVALID listing every issue with its path under `prefix`. */
export function parseSignalPolicy(raw: unknown, prefix = 'signals.policy'): SignalPolicy {
  return { rules: parseWith(SignalPolicySchema, raw ?? [], prefix, 'signal response policy') }
}

/** What the policy is asked about. */
export interface Signal {
  readonly eventType: SetEventType
  readonly agent: AgentSubject
  /** 0..1; absent when the transmitter gave none and the stream has no default. */
  readonly confidence?: number
}

/** The signal of a verified SET: its event's `confidence`, else the stream's default. */
export function signalOf(s: VerifiedSet, defaultConfidence?: number): Signal {
  const confidence = typeof s.event.confidence === 'number' ? s.event.confidence : defaultConfidence
  return { eventType: s.eventType, agent: s.agent, ...(confidence !== undefined ? { confidence } : {}) }
}

export type PolicyDecision =
  | { readonly action: 'revoke'; readonly rule: number; readonly level: RevocationKind; readonly value: string }
  | { readonly action: 'quarantine'; readonly rule: number; readonly prefix: string; readonly notAfter?: number }
  | {
      readonly action: 'narrow'
      readonly rule: number
      readonly prefix: string
      readonly scopes: readonly string[]
      readonly resources?: readonly string[]
      readonly notAfter: number
    }
  | {
      readonly action: 'step_up'
      readonly rule: number
      readonly target: StepUpTarget
      /** A SPIFFE ID: the agent itself (`instance`), or it and everything under it (`prefix`). */
      readonly value: string
      readonly clearOnApproval: boolean
      /** Unix seconds; absent: until satisfied or cleared. */
      readonly notAfter?: number
    }
  | { readonly action: 'record'; readonly rule?: number; readonly reason: 'rule' | 'no_rule' | 'target_missing' }

export interface DecideOptions {
  readonly nowSec: number
  /** This broker's issuer: a `jwt_id` subject names one of our tokens only with this `iss`. */
  readonly tokenIssuer: string
}

/** The subject's SPIFFE ID when it is a valid one. */
function spiffeOf(a: AgentSubject): SpiffeId | undefined {
  if (a.spiffeId === undefined || !SpiffeId.isValid(a.spiffeId)) return undefined
  return SpiffeId.fromString(a.spiffeId)
}

function matches(rule: SignalRule, s: Signal): boolean {
  if (!rule.event.includes(s.eventType)) return false
  if (rule.min_confidence !== undefined && (s.confidence === undefined || s.confidence < rule.min_confidence)) return false
  const m = rule.match
  const id = spiffeOf(s.agent)?.toString()
  if (m.spiffe_id !== undefined) return id === m.spiffe_id
  if (m.prefix !== undefined) return id !== undefined && underPrefix(id, m.prefix)
  if (m.instance !== undefined) return s.agent.instanceId === m.instance
  if (m.task !== undefined) return s.agent.taskId === m.task
  return false
}

/** A prefix taken from the subject: its SPIFFE ID, never a bare trust domain. */
function subjectPrefix(a: AgentSubject): string | undefined {
  const id = spiffeOf(a)
  return id !== undefined && id.path !== '' ? id.toString() : undefined
}

function target(rule: SignalRule & { action: 'revoke' }, a: AgentSubject, tokenIssuer: string): string | undefined {
  const jti = a.token !== undefined && a.token.iss === tokenIssuer ? a.token.jti : undefined
  switch (rule.level) {
    case 'token':
      return jti
    case 'chain':
      return jti ?? spiffeOf(a)?.toString()
    case 'instance':
      return spiffeOf(a)?.toString()
    case 'task':
      return a.taskId
    case 'prefix':
      return rule.prefix ?? subjectPrefix(a)
  }
}

/** The one action for a signal: the first matching rule's, else `record`. */
export function decide(policy: SignalPolicy, s: Signal, o: DecideOptions): PolicyDecision {
  if (STREAM_EVENT_TYPES.includes(s.eventType)) return { action: 'record', reason: 'no_rule' }
  const i = policy.rules.findIndex((r) => matches(r, s))
  if (i < 0) return { action: 'record', reason: 'no_rule' }
  const rule = policy.rules[i]!
  switch (rule.action) {
    case 'record':
      return { action: 'record', rule: i, reason: 'rule' }
    case 'revoke': {
      const value = target(rule, s.agent, o.tokenIssuer)
      return value === undefined ? { action: 'record', rule: i, reason: 'target_missing' } : { action: 'revoke', rule: i, level: rule.level, value }
    }
    case 'quarantine': {
      const prefix = rule.prefix ?? subjectPrefix(s.agent)
      if (prefix === undefined) return { action: 'record', rule: i, reason: 'target_missing' }
      return {
        action: 'quarantine',
        rule: i,
        prefix,
        ...(rule.duration !== undefined ? { notAfter: Math.floor(o.nowSec) + Math.ceil(rule.duration / 1000) } : {}),
      }
    }
    case 'narrow': {
      const prefix = rule.prefix ?? subjectPrefix(s.agent)
      if (prefix === undefined) return { action: 'record', rule: i, reason: 'target_missing' }
      return {
        action: 'narrow',
        rule: i,
        prefix,
        scopes: rule.scopes,
        ...(rule.resources !== undefined ? { resources: rule.resources } : {}),
        notAfter: Math.floor(o.nowSec) + Math.ceil(rule.duration / 1000),
      }
    }
    case 'step_up': {
      const value = rule.target === 'instance' ? spiffeOf(s.agent)?.toString() : (rule.prefix ?? subjectPrefix(s.agent))
      if (value === undefined) return { action: 'record', rule: i, reason: 'target_missing' }
      return {
        action: 'step_up',
        rule: i,
        target: rule.target,
        value,
        clearOnApproval: rule.clear_on_approval,
        ...(rule.duration !== undefined ? { notAfter: Math.floor(o.nowSec) + Math.ceil(rule.duration / 1000) } : {}),
      }
    }
  }
}
