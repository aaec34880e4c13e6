import { X509Certificate } from 'node:crypto'
import type { PeerCertificate } from 'node:tls'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { X509BundleSource } from '../../spiffe/bundle/x509-bundle.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import { checkSigningCertificate, MAX_CHAIN_LENGTH, parseFields } from '../../spiffe/x509-svid/svid-rules.js'
import { parseLeafSpiffeId } from '../../spiffe/x509-svid/verify.js'
import { X509Svid } from '../../spiffe/x509-svid/x509-svid.js'
import { isList } from '../../spiffe/guards.js'

/** A peer whose X.509-SVID verified against the bundle of its own trust domain. */
export interface VerifiedPeer {
  readonly id: SpiffeId
  /** The peer's SVID as it presented it (certificates only, no key). */
  readonly svid: X509Svid
  /** Leaf, the intermediates used, then the authority of the bundle (DER). */
  readonly verifiedChain: readonly Uint8Array[]
}

function untrusted(message: string, opts?: { cause?: unknown; details?: Record<string, unknown> }): IdentityError {
  return new IdentityError('ERR_X509_SVID_UNTRUSTED', `tlsconfig: ${message}`, opts)
}

function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.checkIssued(parent) && child.verify(parent.publicKey)
  } catch {
    return false
  }
}

function within(c: X509Certificate, nowMs: number): boolean {
  return nowMs >= Date.parse(c.validFrom) && nowMs <= Date.parse(c.validTo)
}

/** The path length constraint of a usable signing certificate, or false when it cannot sign certificates. */
function signingPathLen(der: Uint8Array): number | undefined | false {
  try {
    return checkSigningCertificate(parseFields(der, 'signing certificate'))
  } catch {
    return false
  }
}

/**
 * Verifies a peer's certificate chain (DER, leaf first, as the peer sent it)
 * the SPIFFE way, synchronously so it can run inside a TLS handshake:
 *
 * 1. the leaf is an X.509-SVID (exactly one URI SAN with a SPIFFE ID that has
 *    a path, not a CA, digitalSignature without keyCertSign/cRLSign) that is
 *    valid now → else ERR_X509_SVID_INVALID;
 * 2. a path of signatures runs from the leaf through the presented
 *    certificates to an authority of the bundle of **the leaf's own trust
 *    domain** (never another trust domain's), every signer a CA with
 *    keyCertSign, valid now, within its path length constraint → else
 *    ERR_X509_SVID_UNTRUSTED (a missing bundle is its cause).
 *
 * In the TLS helpers OpenSSL has validated the chain against the union of all
 * bundles first (RFC 5280, extended key usage); this check pins the anchor to
 * the peer's trust domain, which a union of CAs cannot.
 */
export function verifyPeerChain(chain: readonly Uint8Array[], bundles: X509BundleSource, opts: { now?: Date } = {}): VerifiedPeer {
  if (!isList(chain)) throw new TypeError('chain must be an array of DER certificates')
  if (chain.length === 0) throw untrusted('peer presented no certificate')
  if (chain.length > MAX_CHAIN_LENGTH) throw new IdentityError('ERR_X509_SVID_INVALID', `tlsconfig: peer chain has more than ${MAX_CHAIN_LENGTH} certificates`)
  const nowMs = (opts.now ?? new Date()).getTime()
  const id = parseLeafSpiffeId(chain[0]!)
  let certs: X509Certificate[]
  try {
    certs = chain.map((d) => new X509Certificate(d))
  } catch (cause) {
    throw new IdentityError('ERR_X509_SVID_INVALID', 'tlsconfig: peer certificate cannot be parsed', { cause })
  }
  const leaf = certs[0]!
  if (!within(leaf, nowMs)) throw new IdentityError('ERR_X509_SVID_INVALID', 'tlsconfig: peer certificate is expired or not yet valid')

  let bundle
  try {
    bundle = bundles.getX509BundleForTrustDomain(id.trustDomain)
  } catch (cause) {
    if (isIdentityError(cause, 'ERR_BUNDLE_NOT_FOUND')) throw untrusted(`no bundle for the peer's trust domain "${id.trustDomain.name}"`, { cause })
    throw cause
  }
  if (!bundle.trustDomain.equals(id.trustDomain)) throw untrusted(`bundle of "${bundle.trustDomain.name}" returned for "${id.trustDomain.name}"`)
  const anchors = bundle.certificates().map((c, i) => ({ c, der: bundle.authorities[i]! }))
  const intermediates = certs.slice(1).map((c, i) => ({ c, der: chain[i + 1]! }))

  // Depth-first over the presented certificates; `below` = signing certificates between this one and the leaf.
  const build = (cert: X509Certificate, path: Uint8Array[], used: Set<number>): Uint8Array[] | undefined => {
    const below = path.length - 1
    for (const a of anchors) {
      if (!issuedBy(cert, a.c) || !within(a.c, nowMs)) continue
      const pathLen = signingPathLen(a.der)
      if (pathLen === false || (pathLen !== undefined && below > pathLen)) continue
      return [...path, a.der]
    }
    if (path.length >= MAX_CHAIN_LENGTH) return undefined
    for (let i = 0; i < intermediates.length; i++) {
      const m = intermediates[i]!
      if (used.has(i) || !issuedBy(cert, m.c) || !within(m.c, nowMs)) continue
      const pathLen = signingPathLen(m.der)
      if (pathLen === false || (pathLen !== undefined && below > pathLen)) continue
      const found = build(m.c, [...path, m.der], new Set(used).add(i))
      if (found) return found
    }
    return undefined
  }
  const verifiedChain = build(leaf, [chain[0]!], new Set())
  if (!verifiedChain) throw untrusted(`peer certificate does not chain to the bundle of its trust domain "${id.trustDomain.name}"`)
  const svid = X509Svid.fromChain([chain[0]!])
  return { id, svid, verifiedChain }
}

/** The certificates a TLS peer presented (leaf first), from `getPeerCertificate(true)`; stops at a loop. */
export function peerCertificateChain(cert: PeerCertificate | undefined | null): Uint8Array[] {
  const out: Uint8Array[] = []
  const seen = new Set<string>()
  let c = cert as (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined
  while (c?.raw && out.length <= MAX_CHAIN_LENGTH) {
    if (seen.has(c.fingerprint256)) break
    seen.add(c.fingerprint256)
    out.push(new Uint8Array(c.raw))
    c = c.issuerCertificate
  }
  return out
}
