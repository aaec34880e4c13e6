/**
 * What the broker's domain needs from the world, declared here (the consumer
 * defines the interface). The composition root implements them: embedded in
 * `warrant server run` from the server's bounds service and bundles;
 * standalone from the Workload API (JWT bundles) and a signed bounds document
 * (see ARCHITECTURE.md, "The broker's domain").
 */
import type { AuditSink } from '../audit/sink.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log/logger.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import type { BoundsSet } from '../spiffe/bounds/bounds-set.js'
import { ceilingFor, type Ceiling } from '../spiffe/bounds/ceiling.js'
import type { JwtBundleSource } from '../spiffe/bundle/jwt-bundle.js'
import type { SpiffeId } from '../spiffe/spiffe-id.js'
import type { UserToken } from '../tokens/user-token.js'
import type { StepUpGate } from './step-ups.js'

export type { Clock } from '../common/clock.js'
export type { Logger } from '../common/log/logger.js'
export type { Ceiling } from '../spiffe/bounds/ceiling.js'
export type { JwtBundleSource } from '../spiffe/bundle/jwt-bundle.js'

/**
 * The permission ceiling of an agent's SPIFFE ID, from the namespace bounds
 * of its trust domain (an ID of another trust domain, or under no declared
 * prefix, gets the empty ceiling: no scopes, no resources, no delegation).
 * Read on every request, so a bounds change applies to the next one.
 */
export interface CeilingSource {
  ceilingFor(id: SpiffeId): Ceiling | Promise<Ceiling>
}

/** A CeilingSource over whatever bounds set is current (the server's BoundsService, or the last verified document). */
export function boundsCeilingSource(current: () => BoundsSet): CeilingSource {
  return { ceilingFor: (id) => ceilingFor(current(), id) }
}

/**
 * Seals tools' static credentials (credentials.ts): AES-256-GCM under a key the key manager holds (in an HSM,
 * generated in the token and never extractable); `open` throws on any change to the sealed bytes or the AAD.
 */
export interface CredentialSealer {
  seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
  open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
}

/** Everything the broker's domain is built from. */
export interface BrokerDeps {
  /** Holds the token signing keys (in the quickstart: SoftHSM, sensitive and never extractable). */
  keyManager: KeyManager
  ceilings: CeilingSource
  /** Trust for JWT-SVIDs presented as subject tokens: the local and federated JWT bundles. */
  jwtBundles: JwtBundleSource
  clock?: Clock
  log?: Logger
  /**
   * The audit log. When present, a token is released only once its event is
   * durable; when the log is unavailable issuance stops (ERR_AUDIT_UNAVAILABLE).
   */
  audit?: AuditSink
  /**
   * Users' access tokens from trusted issuers, accepted as the subject of a Txn-Token request on a user's behalf:
   * undefined when the token's `iss` is not a trusted issuer; ERR_GRANT_INVALID when it is and the token fails.
   */
  userTokens?: (token: string) => Promise<UserToken | undefined>
  /**
   * Step-ups a Shared Signal put on agents (src/broker/step-ups.ts): while one stands for the client, or for the
   * subject or an actor of the token to be issued, no plain token is issued (ERR_STEP_UP_REQUIRED); intents' tokens are.
   */
  stepUps?: StepUpGate
}
