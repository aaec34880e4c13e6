import { X509Certificate, createHash, randomBytes, verify } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import { pemCertificates } from '../../../src/common/crypto/pem.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import type { PluginDefinition, ServerNodeAttestor } from '../../../src/plugin/contracts.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { decodeAnswer, decodePayload, encodeChallenge, signedData } from './payload.js'

const ConfigSchema = z
  .object({
    /** PEM file(s) with the CA certificates agents' certificates must chain to. */
    ca_bundle_path: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  })
  .strict()

export interface X509PopServerConfig {
  caBundlePaths: string[]
}

const fail = (why: string): never => {
  throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', `x509pop: ${why}`)
}

const sha1 = (der: Uint8Array) => createHash('sha1').update(der).digest('hex')

/**
 * Builds and checks a path leaf → intermediates → one of `roots`: each link
 * issued and signed by the next, every certificate within its validity, every
 * issuer a CA. Returns the chain above the leaf (intermediates used and the root).
 */
export function verifyChain(leaf: X509Certificate, intermediates: X509Certificate[], roots: X509Certificate[], now: Date): X509Certificate[] {
  const valid = (c: X509Certificate) => Date.parse(c.validFrom) <= now.getTime() && now.getTime() <= Date.parse(c.validTo)
  if (!valid(leaf)) fail('certificate is expired or not yet valid')
  const path: X509Certificate[] = []
  let cur = leaf
  for (let depth = 0; depth < 8; depth++) {
    const root = roots.find((r) => cur.checkIssued(r) && cur.verify(r.publicKey))
    if (root) {
      if (!valid(root) || !root.ca) fail('trusted CA is expired or not a CA')
      path.push(root)
      return path
    }
    const next = intermediates.find((i) => !path.includes(i) && i !== cur && cur.checkIssued(i) && cur.verify(i.publicKey))
    if (!next) break
    if (!valid(next) || !next.ca) fail('intermediate is expired or not a CA')
    path.push(next)
    cur = next
  }
  return fail('certificate does not chain to a trusted CA')
}

export const x509popServerPlugin: PluginDefinition<X509PopServerConfig, ServerNodeAttestor> = {
  type: 'node_attestor',
  name: 'x509pop',
  parseConfig(raw) {
    const c = parseWith(ConfigSchema, raw ?? {})
    return { caBundlePaths: Array.isArray(c.ca_bundle_path) ? c.ca_bundle_path : [c.ca_bundle_path] }
  },
  async create(config, deps) {
    const roots: X509Certificate[] = []
    for (const p of config.caBundlePaths) {
      let pem: string
      try {
        pem = readFileSync(resolve(p), 'utf8')
      } catch (cause) {
        throw new IdentityError('ERR_CONFIG_INVALID', `x509pop: cannot read ca_bundle_path ${p}`, { cause })
      }
      roots.push(...pemCertificates(pem))
    }
    if (roots.length === 0) throw new IdentityError('ERR_CONFIG_INVALID', 'x509pop: ca_bundle_path holds no certificate')
    return {
      async attest(payload, challenge) {
        const p = decodePayload(payload)
        let certs: X509Certificate[]
        try {
          certs = p.chain.map((d) => new X509Certificate(d))
        } catch {
          return fail('certificate cannot be parsed')
        }
        const leaf = certs[0]!
        if (leaf.ca) fail('leaf certificate is a CA')
        const path = verifyChain(leaf, certs.slice(1), roots, new Date(deps.clock.now()))
        const nonce = randomBytes(32)
        const answer = decodeAnswer(await challenge(encodeChallenge({ nonce })))
        const ok = verify('sha256', signedData(nonce), leaf.publicKey, answer.signature)
        if (!ok) fail('proof of possession failed: signature does not verify')
        const fp = sha1(leaf.raw)
        const cn = /(?:^|\n)CN=([^\n]*)/.exec(leaf.subject)?.[1]
        const selectorValues = [
          ...(cn ? [`subject:cn:${cn}`] : []),
          `serialnumber:${leaf.serialNumber.toLowerCase()}`,
          ...path.map((c) => `ca:fingerprint:${sha1(c.raw)}`),
        ]
        return {
          agentId: SpiffeId.fromSegments(deps.trustDomain, 'warrant', 'agent', 'x509pop', fp),
          selectorValues,
          canReattest: true,
        }
      },
    }
  },
}
