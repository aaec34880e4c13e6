/**
 * What the quickstart's demo processes share (quickstart-demo-peer.ts,
 * quickstart-demo-services.ts): a JSON-lines logger on stderr (the quickstart
 * sends it to a log file), the X.509 source holding the process's own SVID,
 * that SVID as TLS options, and the gateway demo's scopes.
 */
import type { Logger } from '../common/log/logger.js'
import { toPemBlock } from '../common/crypto/pem.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { X509Source } from '../workload-client/x509-source.js'

/** The gateway demo's scopes: the search tool's, and the one payments (and the fraud check before it) need. */
export const SEARCH_SCOPE = 'tools:search'
export const PAYMENTS_SCOPE = 'payments:write'
/** Payments above this are refused by the fraud check. */
export const FRAUD_LIMIT = 10_000

/** A logger writing JSON lines to stderr. */
export const stderrLog = (bound: Record<string, unknown> = {}): Logger => {
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) =>
    process.stderr.write(
      `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...bound, ...fields }, (_k, v: unknown) => (v instanceof Error ? v.message : v))}\n`,
    )
  return { debug: () => {}, info: at('info'), warn: at('warn'), error: at('error'), child: (f) => stderrLog({ ...bound, ...f }) }
}

/** The X.509 source holding the SVID of `spiffeId` (waits until the agent serves it). */
export async function sourceFor(a: { spiffeId: string; socketPath: string }, log: Logger): Promise<X509Source> {
  const pick = (svids: readonly X509Svid[]) => {
    const s = svids.find((x) => x.id.toString() === a.spiffeId)
    if (!s) throw new Error(`no SVID for ${a.spiffeId} yet`)
    return s
  }
  return X509Source.create({ socketPath: a.socketPath, picker: pick, log, signal: AbortSignal.timeout(90_000) })
}

/** An SVID as PEM certificate chain and key (TLS server or client options). */
export function tlsOf(svid: X509Svid): { cert: string; key: string } {
  return { cert: svid.certificates.map((c) => toPemBlock('CERTIFICATE', c)).join(''), key: svid.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string }
}
