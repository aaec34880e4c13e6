/**
 * Verifying a log, pure: rows and checkpoints go in (from a copy of the
 * SQLite file, read by `store/log-reader.ts`), a report comes out that says
 * whether the log is intact and, if not, where it first is not.
 *
 * It re-derives everything: each event's leaf hash from its bytes, the chain
 * link by link (chain_i from the stored chain_{i-1}, so a broken link is
 * located at its seq even if later ones were recomputed), the Merkle tree
 * over all leaves, the root at every checkpoint's size against that
 * checkpoint, and every checkpoint's signature with only the public key.
 * With `checkEvents`, each event is also parsed against the schema and must
 * be byte-for-byte its own canonical form.
 */
import type { ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'
import { canonicalJson } from './canonical.js'
import { isCanonicalAuditEvent } from './canonical-event.js'
import { openCheckpoint, parseCheckpointInsecure, type Checkpoint, type NoteVerifier } from './checkpoint.js'
import { parseAuditEvent } from './event.js'
import { chainHash, GENESIS } from './hash-chain.js'
import { leafHash, MerkleAccumulator } from './merkle.js'

export type TamperKind =
  | 'unreadable'
  | 'seq_gap'
  | 'event_invalid'
  | 'non_canonical'
  | 'chain_mismatch'
  | 'root_mismatch'
  | 'truncated'
  | 'signature_invalid'
  | 'signature_missing'
  | 'checkpoint_malformed'
  | 'origin_mismatch'
  | 'checkpoints_inconsistent'
  | 'no_checkpoint'

export interface VerifyProblem {
  readonly code: ErrorCode
  readonly kind: TamperKind
  /** The first event (seq) found wrong, when one is. */
  readonly seq?: number
  /** The events a root mismatch is confined to: (after, upTo]. */
  readonly range?: { readonly after: number; readonly upTo: number }
  /** The checkpoint concerned (its tree size). */
  readonly checkpointSize?: number
  readonly message: string
}

export interface VerifyReport {
  readonly ok: boolean
  readonly events: number
  readonly checkpoints: number
  /** The largest signed tree size found consistent with the events. */
  readonly verifiedSize: number
  /** Events after the last verified checkpoint: chained, but not yet signed. */
  readonly unsignedTail: number
  /** Hex root of the whole log as read. */
  readonly rootHash: string
  readonly origin: string | undefined
  readonly problem?: VerifyProblem
}

export interface LogVerifierOptions {
  readonly verifier: NoteVerifier
  /** Checkpoint notes stored in the log (any order). */
  readonly checkpoints: readonly string[]
  /** Checkpoint notes kept outside the log (a witness's or a monitor's copy): they catch a cut-off tail. */
  readonly external?: readonly string[]
  /** Also validate every event's schema and canonical form (default true). */
  readonly checkEvents?: boolean
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

/**
 * The per-event check of `checkEvents`: the stored bytes parse as an audit
 * event and are exactly its RFC 8785 form. Undefined when they are.
 */
export function checkEventBytes(bytes: Uint8Array): { kind: 'event_invalid' | 'non_canonical'; message: string } | undefined {
  // the common case in one scan; whatever it cannot vouch for takes the full check below, which gives the verdict
  if (isCanonicalAuditEvent(bytes)) return undefined
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
    parseAuditEvent(parsed)
  } catch (err) {
    return { kind: 'event_invalid', message: `is not a valid audit event: ${(err as Error).message}` }
  }
  return canonicalJson(parsed) === text ? undefined : { kind: 'non_canonical', message: 'is not in canonical (RFC 8785) form' }
}

export class LogVerifier {
  readonly #checkEvents: boolean
  readonly #tree = new MerkleAccumulator()
  /** Verified checkpoints by size, ascending; the next to reach is #pending[0]. */
  readonly #pending: { size: number; cp: Checkpoint; external: boolean }[] = []
  readonly #checkpointCount: number
  #problem: VerifyProblem | undefined
  #prevChain: Uint8Array = GENESIS
  #seq = 0
  #verifiedSize = 0
  #origin: string | undefined

  constructor(opts: LogVerifierOptions) {
    this.#checkEvents = opts.checkEvents ?? true
    this.#checkpointCount = opts.checkpoints.length + (opts.external?.length ?? 0)
    const all = [...opts.checkpoints.map((n) => ({ n, external: false })), ...(opts.external ?? []).map((n) => ({ n, external: true }))]
    const opened: { size: number; cp: Checkpoint; external: boolean }[] = []
    for (const { n, external } of all) {
      let size: number | undefined
      try {
        size = parseCheckpointInsecure(n).size
        const cp = openCheckpoint(n, opts.verifier)
        opened.push({ size: cp.size, cp, external })
      } catch (err) {
        const kind = err instanceof IdentityError && typeof err.details?.kind === 'string' ? (err.details.kind as TamperKind) : 'checkpoint_malformed'
        this.#fail(
          { code: 'ERR_AUDIT_CHECKPOINT_INVALID', kind, ...(size !== undefined ? { checkpointSize: size } : {}), message: (err as Error).message },
          size ?? 0,
        )
      }
    }
    opened.sort((a, b) => a.size - b.size)
    for (const o of opened) {
      if (this.#origin === undefined) this.#origin = o.cp.origin
      else if (o.cp.origin !== this.#origin) {
        this.#fail(
          {
            code: 'ERR_AUDIT_CHECKPOINT_INVALID',
            kind: 'origin_mismatch',
            checkpointSize: o.size,
            message: `checkpoint at size ${o.size} is for origin "${o.cp.origin}", not "${this.#origin}"`,
          },
          o.size,
        )
      }
      const same = this.#pending.find((p) => p.size === o.size)
      if (same) {
        if (!Buffer.from(same.cp.rootHash).equals(Buffer.from(o.cp.rootHash))) {
          this.#fail(
            {
              code: 'ERR_AUDIT_CHECKPOINT_INVALID',
              kind: 'checkpoints_inconsistent',
              checkpointSize: o.size,
              message: `two checkpoints signed at size ${o.size} have different roots (a split view)`,
            },
            o.size,
          )
        }
        continue
      }
      this.#pending.push(o)
    }
  }

  /** Keeps the problem at the lowest position (seq or checkpoint size). */
  #problemAt = Number.POSITIVE_INFINITY
  #fail(p: VerifyProblem, at: number): void {
    if (at < this.#problemAt) {
      this.#problem = p
      this.#problemAt = at
    }
  }

  /** True once a problem is known at or before the current position: reading further cannot change the report. */
  get failed(): boolean {
    return this.#problemAt <= this.#seq + 1
  }

  /** One stored event, in ascending seq order: its seq, its stored bytes and its stored chain value. */
  push(seq: number, event: Uint8Array, storedChain: Uint8Array): void {
    if (this.#checkEvents) this.#checkEvent(seq, event)
    const leaf = leafHash(event)
    const linkOk = chainHash(this.#prevChain, event).equals(storedChain)
    // the next link is checked from the stored value, so one broken link is reported once, at its place
    this.#prevChain = storedChain.byteLength === 32 ? storedChain : GENESIS
    this.pushHashed(seq, leaf, linkOk)
  }

  /**
   * One event whose leaf hash and chain link (chain_seq = SHA-256(stored
   * chain_{seq-1} || bytes) against the stored chain_seq) were computed
   * elsewhere, e.g. by a worker thread; in ascending seq order.
   */
  pushHashed(seq: number, leaf: Buffer, linkOk: boolean): void {
    this.#gap(seq)
    if (!linkOk) this.#brokenLink(seq)
    this.#tree.push(leaf)
    this.#seq = seq
    this.#reachCheckpoints()
  }

  /**
   * 2^height events from `firstSeq` at once, by the root of their subtree:
   * they must be contiguous, start at a leaf index that is a multiple of
   * 2^height, and no checkpoint may fall strictly inside them
   * (`needsLeaves` says when one does). `brokenLinks` are the seqs whose
   * chain link failed.
   */
  pushSubtree(firstSeq: number, height: number, root: Buffer, brokenLinks: readonly number[]): void {
    this.#gap(firstSeq)
    for (const s of brokenLinks) this.#brokenLink(s)
    this.#tree.pushSubtree(root, height)
    this.#seq = firstSeq + 2 ** height - 1
    this.#reachCheckpoints()
  }

  /** True when events firstSeq..lastSeq cannot be pushed as one subtree: a checkpoint falls strictly inside, or the tree is not where they start. */
  needsLeaves(firstSeq: number, lastSeq: number): boolean {
    if (this.#tree.size !== firstSeq - 1) return true
    return this.#pending.some((p) => p.size >= firstSeq && p.size < lastSeq)
  }

  /** A schema or canonical-form problem of event `seq` found elsewhere (a worker thread). */
  reportEvent(seq: number, kind: 'event_invalid' | 'non_canonical', message: string): void {
    this.#fail({ code: 'ERR_AUDIT_LOG_TAMPERED', kind, seq, message }, seq)
  }

  #gap(seq: number): void {
    const expected = this.#seq + 1
    if (seq !== expected) {
      // carry on from the stored seq, so later checkpoints still locate what follows
      this.#fail(
        { code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'seq_gap', seq: expected, message: `event ${expected} is missing (the next stored event is ${seq})` },
        expected,
      )
    }
  }

  #brokenLink(seq: number): void {
    this.#fail(
      { code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'chain_mismatch', seq, message: `event ${seq} does not chain from event ${seq - 1} (edited, moved or inserted)` },
      seq,
    )
  }

  #reachCheckpoints(): void {
    while (this.#pending.length > 0 && this.#pending[0]!.size <= this.#tree.size) {
      const p = this.#pending.shift()!
      if (p.size !== this.#tree.size) continue // a size skipped by a seq gap: reported as the gap
      if (!this.#tree.root().equals(Buffer.from(p.cp.rootHash))) {
        this.#fail(
          {
            code: 'ERR_AUDIT_LOG_TAMPERED',
            kind: 'root_mismatch',
            range: { after: this.#verifiedSize, upTo: p.size },
            checkpointSize: p.size,
            message: `the events up to ${p.size} do not have the root signed at that size: something among events ${this.#verifiedSize + 1}..${p.size} was changed`,
          },
          // placed at the checkpoint's end: a precise finding inside the range (a gap, a broken link) comes first
          p.size,
        )
      } else if (this.#problemAt > p.size) {
        this.#verifiedSize = p.size
      }
    }
  }

  #checkEvent(seq: number, bytes: Uint8Array): void {
    const problem = checkEventBytes(bytes)
    if (problem) this.reportEvent(seq, problem.kind, `event ${seq} ${problem.message}`)
  }

  finish(): VerifyReport {
    for (const p of this.#pending) {
      this.#fail(
        {
          code: 'ERR_AUDIT_LOG_TAMPERED',
          kind: 'truncated',
          seq: this.#seq + 1,
          checkpointSize: p.size,
          message: `a checkpoint${p.external ? ' kept outside the log' : ''} signed ${p.size} events but the log ends at ${this.#seq}: events ${this.#seq + 1}..${p.size} were removed`,
        },
        this.#seq + 1,
      )
      break
    }
    if (this.#checkpointCount === 0) {
      this.#fail(
        { code: 'ERR_AUDIT_CHECKPOINT_INVALID', kind: 'no_checkpoint', message: 'the log has no signed checkpoint: nothing in it is authenticated' },
        Number.MAX_SAFE_INTEGER,
      )
    }
    return {
      ok: this.#problem === undefined,
      events: this.#seq,
      checkpoints: this.#checkpointCount,
      verifiedSize: this.#verifiedSize,
      unsignedTail: this.#seq - this.#verifiedSize,
      rootHash: hex(this.#tree.root()),
      origin: this.#origin,
      ...(this.#problem !== undefined ? { problem: this.#problem } : {}),
    }
  }
}
