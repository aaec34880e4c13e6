import { X509Certificate, createPrivateKey, sign, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import type { AgentNodeAttestor, PluginDefinition } from '../../../src/plugin/contracts.js'
import { decodeChallenge, encodeAnswer, encodePayload, signedData } from './payload.js'
import { pemCertificates } from '../../../src/common/crypto/pem.js'

const ConfigSchema = z
  .object({
    certificate_path: z.string().min(1),
    private_key_path: z.string().min(1),
    intermediates_path: z.string().min(1).optional(),
  })
  .strict()

export interface X509PopAgentConfig {
  certificatePath: string
  privateKeyPath: string
  intermediatesPath: string | undefined
}

/** Agent half: sends its certificate chain, then signs the server's nonce with the certificate's key. */
export function x509popAgent(chain: X509Certificate[], key: KeyObject): AgentNodeAttestor {
  return {
    async payload() {
      return encodePayload({ chain: chain.map((c) => new Uint8Array(c.raw)) })
    },
    async answer(challenge) {
      const { nonce } = decodeChallenge(challenge)
      return encodeAnswer({ signature: sign('sha256', signedData(nonce), key) })
    },
  }
}

export const x509popAgentPlugin: PluginDefinition<X509PopAgentConfig, AgentNodeAttestor> = {
  type: 'node_attestor',
  name: 'x509pop',
  parseConfig(raw) {
    const c = parseWith(ConfigSchema, raw ?? {})
    return { certificatePath: c.certificate_path, privateKeyPath: c.private_key_path, intermediatesPath: c.intermediates_path }
  },
  async create(config) {
    let chain: X509Certificate[]
    let key: KeyObject
    try {
      chain = pemCertificates(readFileSync(config.certificatePath, 'utf8'))
      if (config.intermediatesPath) chain.push(...pemCertificates(readFileSync(config.intermediatesPath, 'utf8')))
      key = createPrivateKey(readFileSync(config.privateKeyPath))
    } catch (cause) {
      throw new IdentityError('ERR_CONFIG_INVALID', 'x509pop: cannot read certificate or key', { cause })
    }
    if (chain.length === 0) throw new IdentityError('ERR_CONFIG_INVALID', 'x509pop: certificate_path holds no certificate')
    if (!chain[0]!.checkPrivateKey(key)) throw new IdentityError('ERR_CONFIG_INVALID', 'x509pop: private key does not match the certificate')
    return x509popAgent(chain, key)
  },
}
