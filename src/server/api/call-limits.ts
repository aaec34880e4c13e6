import { Metadata, ServerInterceptingCall, status as Status, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js'
import { constants as http2constants } from 'node:http2'
import type { ErrorCode } from '../../errors/codes.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { Metrics } from '../metrics.js'

type PartialStatusObject = Parameters<ServerInterceptingCallInterface['sendStatus']>[0]

/**
 * Receive limits and admission of the agent API (`warrant.agent.v1.Node`
 * on the server's TLS port), as a grpc-js server interceptor.
 *
 * grpc-js has one `grpc.max_receive_message_length` per server and reads a
 * whole message into memory before the handler sees it (its decoder checks
 * the 5-byte length prefix against the limit, then keeps every chunk until the
 * message is complete, then copies them into one buffer). HTTP/2 flow control
 * does not help: grpc-js consumes DATA frames as they come, so the window
 * keeps opening. The server-wide limit stays at what authenticated agents'
 * batch calls need (AGENT_API_MAX_MESSAGE_BYTES), and this interceptor lowers
 * the limit of each call that needs less before its first DATA frame is read:
 *
 * - `Attest` (no client certificate by design): ATTEST_MAX_MESSAGE_BYTES, so
 *   an oversized message is refused (RESOURCE_EXHAUSTED) at its length prefix
 *   and nothing of it is kept; and at most `maxConcurrent` attestations run
 *   at once, `maxConcurrentPerAddress` from one source address (more are
 *   refused with RESOURCE_EXHAUSTED before anything is read);
 * - any other `Node` method from a peer without a verified client
 *   certificate: refused with UNAUTHENTICATED before its request is read
 *   (the handler would refuse it anyway, after reading up to 16 MiB);
 * - other services (health) from such a peer: UNAUTHENTICATED_MAX_MESSAGE_BYTES.
 *
 * The per-call limit is set on grpc-js' own call object (its `decoder` and
 * `maxReceiveMessageSize`); test/integration/agent-api-limits.test.ts pins
 * that against the grpc-js in use, with the server's RSS.
 */

export const NODE_SERVICE_PREFIX = '/warrant.agent.v1.Node/'
export const ATTEST_METHOD = `${NODE_SERVICE_PREFIX}Attest`
/**
 * Largest Attest message: an attestor payload (x509pop caps it at 64 KiB, tpm
 * at 32 KiB) plus the agent's CSR (capped at 16 KiB), with room to spare.
 * Measured: a tpm payload with swtpm's RSA EK certificate is 2.5 KiB (its
 * challenge 0.6 KiB, the answer 1 KiB), a join_token 32 bytes, a CSR 188
 * bytes (P-256) to 1.1 KiB (RSA-4096).
 */
export const ATTEST_MAX_MESSAGE_BYTES = 96 * 1024
/** Any message from a peer without a verified certificate other than Attest (health checks). */
export const UNAUTHENTICATED_MAX_MESSAGE_BYTES = 16 * 1024
/** The server-wide limit: what authenticated agents may send (BatchNewX509SVID of up to 500 CSRs). */
export const AGENT_API_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

export interface AttestationLimits {
  /** Attest calls in flight, from every source together. */
  maxConcurrent: number
  /** Attest calls in flight from one source address. */
  maxConcurrentPerAddress: number
}

export const DEFAULT_ATTESTATION_LIMITS: AttestationLimits = { maxConcurrent: 64, maxConcurrentPerAddress: 16 }

/** What of grpc-js' BaseServerInterceptingCall this reads and sets (private in its typings). */
interface BaseCallInternals {
  decoder: { maxReadMessageLength: number }
  maxReceiveMessageSize: number
  /** Whether response headers went out (a status then goes in trailers, later). */
  metadataSent?: boolean
  sendStatus(status: PartialStatusObject): void
  stream?: {
    once(ev: 'close', f: () => void): unknown
    close(code: number): void
    readonly closed: boolean
    readonly readableEnded: boolean
    session?: { socket?: { authorized?: boolean } }
  }
}

function baseCallOf(call: ServerInterceptingCallInterface): BaseCallInternals | undefined {
  let c: unknown = call
  for (let i = 0; i < 16 && c !== null && typeof c === 'object'; i++) {
    const d = (c as { decoder?: { maxReadMessageLength?: unknown } }).decoder
    if (
      d !== null &&
      typeof d === 'object' &&
      typeof d.maxReadMessageLength === 'number' &&
      typeof (c as { maxReceiveMessageSize?: unknown }).maxReceiveMessageSize === 'number'
    ) {
      return c as BaseCallInternals
    }
    c = (c as { nextCall?: unknown }).nextCall
  }
  return undefined
}

/**
 * Once a call is refused before anything was answered (an oversized or
 * malformed first message, too many attestations: a trailers-only
 * response), the rest of what the client sends is of no use, but grpc-js
 * would go on reading it (and dropping it) for as long as the client sends.
 * After such a status the stream is reset with NO_ERROR, the way RFC 9113
 * (8.1) lets a server that has answered stop a request body. (Not after
 * messages were sent: grpc-js sends those trailers later, and a reset
 * before them would leave the client without a status.)
 */
function stopReadingAfterRefusal(base: BaseCallInternals): void {
  const send = base.sendStatus
  base.sendStatus = function (this: BaseCallInternals, status: PartialStatusObject) {
    const trailersOnly = base.metadataSent === false
    send.call(this, status)
    const stream = base.stream
    if (trailersOnly && status.code !== Status.OK && stream && !stream.closed && !stream.readableEnded) stream.close(http2constants.NGHTTP2_NO_ERROR)
  }
}

/** Lowers a call's receive limit (framed and, for compressed messages, decompressed size). */
function limitCall(base: BaseCallInternals, bytes: number): void {
  if (base.maxReceiveMessageSize === -1 || base.maxReceiveMessageSize > bytes) {
    base.maxReceiveMessageSize = bytes
    base.decoder.maxReadMessageLength = bytes
  }
}

/** A call answered with `code` before its handler starts: nothing of its request is read. */
function refuse(call: ServerInterceptingCallInterface, code: Status, errorCode: ErrorCode, details: string): ServerInterceptingCall {
  return new ServerInterceptingCall(call, {
    start: (next) => {
      // The handler's listener never gets the metadata, so it neither starts nor asks for a message.
      next({ onReceiveMetadata: () => undefined })
      const metadata = new Metadata()
      metadata.set('x-error-code', errorCode)
      call.sendStatus({ code, details, metadata })
    },
  })
}

/**
 * The call itself, not wrapped: grpc-js only uses the interface of what an
 * interceptor returns (its typings ask for the class), and authenticated
 * agents' calls (the hot path) then pay nothing per message.
 */
const unchanged = (call: ServerInterceptingCallInterface): ServerInterceptingCall => call as ServerInterceptingCall

type LimitMetrics = Pick<Metrics, 'attestationsInFlight' | 'attestationsRefused'>

/** The agent API's interceptor (pass it in `grpc.Server`'s `interceptors` option). */
export function agentApiCallLimits(o: { limits: AttestationLimits; log: Logger; metrics: LimitMetrics }): ServerInterceptor {
  const log = o.log.child({ [F.SUBSYSTEM]: 'node_api' })
  const { maxConcurrent, maxConcurrentPerAddress } = o.limits
  let inFlight = 0
  const perAddress = new Map<string, number>()
  let internalsMissing = false
  // Refusals are logged at most every 10 s, with how many there were since the last line.
  let refusedSinceLog = 0
  let lastLog = 0

  const refused = (reason: 'global' | 'per_address', address: string) => {
    o.metrics.attestationsRefused.inc({ reason })
    refusedSinceLog++
    const now = Date.now()
    if (now - lastLog >= 10_000) {
      log.warn(
        {
          [F.REASON]: reason,
          [F.PEER]: address,
          [F.COUNT]: refusedSinceLog,
          in_flight: inFlight,
          max_concurrent: maxConcurrent,
          max_per_address: maxConcurrentPerAddress,
        },
        'Attestations refused: too many in flight',
      )
      lastLog = now
      refusedSinceLog = 0
    }
  }

  return (method, call) => {
    const path = method.path
    const base = baseCallOf(call)
    if (base === undefined && !internalsMissing) {
      internalsMissing = true
      log.error({}, 'Per-call receive limits are not enforced: this grpc-js has no per-call decoder limit (upgrade path changed)')
    }
    if (path === ATTEST_METHOD) {
      if (base) {
        limitCall(base, ATTEST_MAX_MESSAGE_BYTES)
        stopReadingAfterRefusal(base)
      }
      const address = call.getConnectionInfo().remoteAddress ?? 'unknown'
      const fromAddress = perAddress.get(address) ?? 0
      if (fromAddress >= maxConcurrentPerAddress) {
        refused('per_address', address)
        return refuse(call, Status.RESOURCE_EXHAUSTED, 'ERR_RESOURCE_EXHAUSTED', 'too many concurrent attestations')
      }
      if (inFlight >= maxConcurrent) {
        refused('global', address)
        return refuse(call, Status.RESOURCE_EXHAUSTED, 'ERR_RESOURCE_EXHAUSTED', 'too many concurrent attestations')
      }
      inFlight++
      perAddress.set(address, fromAddress + 1)
      o.metrics.attestationsInFlight.set(inFlight)
      let released = false
      const release = () => {
        if (released) return
        released = true
        inFlight--
        const n = (perAddress.get(address) ?? 1) - 1
        if (n <= 0) perAddress.delete(address)
        else perAddress.set(address, n)
        o.metrics.attestationsInFlight.set(inFlight)
      }
      // Every call's stream closes; grpc-js also reports the end of every call to the listener as onCancel.
      base?.stream?.once('close', release)
      return new ServerInterceptingCall(call, { start: (next) => next({ onCancel: release }) })
    }
    const authenticated = base?.stream?.session?.socket
      ? base.stream.session.socket.authorized === true
      : call.getAuthContext().sslPeerCertificate !== undefined
    if (authenticated) return unchanged(call)
    if (base) stopReadingAfterRefusal(base)
    if (path.startsWith(NODE_SERVICE_PREFIX)) return refuse(call, Status.UNAUTHENTICATED, 'ERR_UNAUTHENTICATED', 'unauthenticated')
    if (base) limitCall(base, UNAUTHENTICATED_MAX_MESSAGE_BYTES)
    return unchanged(call)
  }
}
