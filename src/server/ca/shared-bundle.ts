/**
 * The trust domain's bundle when several servers share one datastore
 * (SPIRE's model): every server has its own X.509 CA and JWT keys in its own
 * key manager, rotated on its own journal, and publishes its authorities (the
 * CA certificates and JWT keys of its journal, or its upstream's roots) under
 * its server ID in the datastore's kv namespace `ca_authorities`. The bundle
 * is the union of every server's authorities that have not expired, in a
 * fixed order (servers by ID, each in its journal's order), so every server
 * computes the same document; the stored bundle record holds it, and its
 * sequence moves only when the union changes. An SVID of any server verifies
 * against it, and a server's rotation only adds its prepared key and, once
 * expired, drops its own retired one: never another server's.
 */
import type { JsonWebKey } from 'node:crypto'
import type { KvStore } from '../datastore/types.js'

export const AUTHORITIES_NAMESPACE = 'ca_authorities'
/** The record key of a CaManager without a server ID (a single server, as before servers were counted). */
export const DEFAULT_SERVER_KEY = 'default'

/** One server's published authorities. */
export interface ServerAuthorities {
  version: 1
  /** base64 DER of each X.509 authority, with its expiry (epoch ms). */
  x509: { cert: string; notAfter: number }[]
  jwt: { kid: string; jwk: JsonWebKey; notAfter: number }[]
}

export async function putAuthorities(kv: KvStore, serverKey: string, a: ServerAuthorities): Promise<void> {
  await kv.put(AUTHORITIES_NAMESPACE, serverKey, JSON.stringify(a))
}

function parse(value: string): ServerAuthorities | undefined {
  try {
    const a = JSON.parse(value) as Partial<ServerAuthorities>
    if (a.version !== 1 || !Array.isArray(a.x509) || !Array.isArray(a.jwt)) return undefined
    return a as ServerAuthorities
  } catch {
    return undefined
  }
}

/**
 * The union of every server's authorities still valid at `now`: X.509
 * authorities deduplicated by certificate, JWT keys by kid (first wins), in
 * the order of the servers' keys. A record that does not parse is skipped
 * (a newer server's format is not guessed at).
 */
export async function unionOfAuthorities(
  kv: KvStore,
  now: number,
): Promise<{ x509: Uint8Array[]; jwt: [string, JsonWebKey][]; servers: { key: string; live: boolean }[] }> {
  const rows = (await kv.list(AUTHORITIES_NAMESPACE)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  const certs = new Set<string>()
  const kids = new Set<string>()
  const x509: Uint8Array[] = []
  const jwt: [string, JsonWebKey][] = []
  const servers: { key: string; live: boolean }[] = []
  for (const row of rows) {
    const a = parse(row.value)
    if (!a) continue
    let live = false
    for (const c of a.x509) {
      if (c.notAfter <= now) continue
      live = true
      if (certs.has(c.cert)) continue
      certs.add(c.cert)
      x509.push(new Uint8Array(Buffer.from(c.cert, 'base64')))
    }
    for (const k of a.jwt) {
      if (k.notAfter <= now) continue
      live = true
      if (kids.has(k.kid)) continue
      kids.add(k.kid)
      jwt.push([k.kid, k.jwk])
    }
    servers.push({ key: row.key, live })
  }
  return { x509, jwt, servers }
}
