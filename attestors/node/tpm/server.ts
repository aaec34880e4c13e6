import { randomBytes, type X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { IdentityError, isIdentityError } from '../../../src/errors/index.js'
import type { NodeAttestationResult, PluginDefinition, PluginDeps, ServerNodeAttestor } from '../../../src/plugin/contracts.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TPMA_OBJECT, publicKeyFromTpmtPublic } from '../../../src/tpm/structures.js'
import { verifyAkPublic, verifyCertifyCreation } from '../../../src/tpm/verify/ak.js'
import { makeCredential } from '../../../src/tpm/verify/credential.js'
import { parsePemCertificates, trustAnchorsFrom, verifyEk, type EkTrustAnchors } from '../../../src/tpm/verify/ek.js'
import { verifyQuote } from '../../../src/tpm/verify/quote.js'
import { constantTimeEqual } from '../../../src/tpm/verify/signature.js'
import { parseTpmServerConfig, type TpmServerConfig } from './server-config.js'
import { NONCE_BYTES, decodeAnswer, decodePayload, encodeChallenge } from './payload.js'

const CREDENTIAL_BYTES = 32
const EK_REQUIRED = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt

function reject(reason: string, cause?: unknown): never {
  throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', reason, cause === undefined ? undefined : { cause })
}

/** Errors of the verification steps become ERR_NODE_ATTESTATION_FAILED with the detailed reason; others pass. */
function asRejection(err: unknown): unknown {
  if (!isIdentityError(err) || err.code === 'ERR_NODE_ATTESTATION_FAILED') return err
  if (err.code === 'ERR_TPM_VERIFICATION_FAILED' || err.code === 'ERR_TPM_PAYLOAD_INVALID' || err.code === 'ERR_ATTESTATION_PAYLOAD_INVALID') {
    return new IdentityError('ERR_NODE_ATTESTATION_FAILED', err.message, { cause: err, ...(err.details ? { details: { ...err.details } } : {}) })
  }
  return err
}

/**
 * A refusal once the credential activation proved the EK: it names the node (`details.agent_id`), so the server
 * knows which attested node failed to attest again (NodeAttestationService.onReattestationRefused).
 */
function naming(err: unknown, agentId: string | undefined): unknown {
  if (agentId === undefined || !isIdentityError(err) || err.code !== 'ERR_NODE_ATTESTATION_FAILED') return err
  return new IdentityError(err.code, err.message, { ...(err.cause !== undefined ? { cause: err.cause } : {}), details: { ...err.details, agent_id: agentId } })
}

/**
 * Server half of the `tpm` node attestor:
 *  1. EK: certificate chain to a configured manufacturer CA (with the
 *     certificate's key equal to the EK public area), or an allow-listed EK hash;
 *  2. AK: restricted signing key attributes and its self-CertifyCreation;
 *  3. challenge: MakeCredential of a random 32-byte secret to the EK, bound to
 *     the AK name, plus a fresh 32-byte nonce and the PCR selection;
 *  4. answer: the activated secret (constant-time) and a quote over the
 *     selection carrying the nonce; PCR policies are evaluated on the quoted values.
 * A refusal after step 4's activation (the EK proven: a quote that fails, a
 * required PCR policy not met) names the agent ID in `details.agent_id`.
 */
export function createTpmServerAttestor(
  config: TpmServerConfig,
  anchors: EkTrustAnchors,
  deps: Pick<PluginDeps, 'clock' | 'trustDomain' | 'log'>,
): ServerNodeAttestor {
  return {
    async attest(payload, challenge, opts): Promise<NodeAttestationResult> {
      let p: ReturnType<typeof decodePayload>
      let state: {
        ekHash: string
        caFingerprints: string[]
        ak: ReturnType<typeof verifyAkPublic>
        secret: Uint8Array
        nonce: Uint8Array
        challenge: Uint8Array
      }
      try {
        p = decodePayload(payload)
        if ((p.ek.public.objectAttributes & EK_REQUIRED) !== EK_REQUIRED || (p.ek.public.objectAttributes & TPMA_OBJECT.sign) !== 0) {
          reject('EK public area is not a restricted decryption key')
        }
        const ek = verifyEk({
          ekPublicKey: publicKeyFromTpmtPublic(p.ek.public),
          ...(p.ekCert === undefined ? {} : { ekCert: p.ekCert }),
          anchors,
          allowList: config.ekHashAllowList,
          now: deps.clock.now(),
        })
        const ak = verifyAkPublic(p.ak.bytes)
        verifyCertifyCreation({ ak, attest: p.akCreationAttest, signature: p.akCreationSignature, creationData: p.akCreationData })
        const secret = new Uint8Array(randomBytes(CREDENTIAL_BYTES))
        const nonce = new Uint8Array(randomBytes(NONCE_BYTES))
        const cred = makeCredential({ ekPublic: p.ek.public, akName: ak.name, secret })
        state = {
          ekHash: ek.ekHash,
          caFingerprints: ek.caFingerprints,
          ak,
          secret,
          nonce,
          challenge: encodeChallenge({ ...cred, nonce, pcrBank: config.pcrBank, pcrs: config.pcrs }),
        }
      } catch (err) {
        throw asRejection(err)
      }

      opts.signal?.throwIfAborted()
      const answerBytes = await challenge(state.challenge)

      const agentId = SpiffeId.fromSegments(deps.trustDomain, 'warrant', 'agent', 'tpm', state.ekHash)
      let proven: string | undefined
      try {
        const answer = decodeAnswer(answerBytes, config.pcrBank)
        if (!constantTimeEqual(answer.activatedSecret, state.secret)) reject('activated credential does not match the challenge')
        // only the TPM holding this EK (with the AK loaded beside it) could activate the credential
        proven = agentId.toString()
        const reported = [...answer.pcrValues.keys()].sort((a, b) => a - b)
        if (reported.length !== config.pcrs.length || reported.some((v, i) => v !== config.pcrs[i])) {
          reject('reported PCRs are not the requested selection')
        }
        const quote = verifyQuote({
          akPublic: state.ak,
          attest: answer.quoteAttest,
          signature: answer.quoteSignature,
          nonce: state.nonce,
          pcrs: { hash: config.pcrBank, values: answer.pcrValues },
          requiredSelection: config.pcrs,
        })
        const hexPcrs = new Map([...quote.pcrs].map(([i, v]) => [i, Buffer.from(v).toString('hex')]))
        const matched: string[] = []
        for (const [name, policy] of config.pcrPolicies) {
          if ([...policy].every(([i, v]) => hexPcrs.get(i) === v)) matched.push(name)
        }
        if (config.requirePcrPolicy !== undefined && !matched.includes(config.requirePcrPolicy)) {
          reject('quoted PCR values do not satisfy the required PCR policy', undefined)
        }
        const selectorValues = [
          `ek_hash:${state.ekHash}`,
          ...state.caFingerprints.map((fp) => `ek_ca:${fp}`),
          ...[...hexPcrs].map(([i, v]) => `pcr:${config.pcrBank}:${i}:${v}`),
          ...matched.map((name) => `pcr_policy:${name}`),
        ]
        return { agentId, selectorValues, canReattest: true }
      } catch (err) {
        throw naming(asRejection(err), proven)
      }
    },
  }
}

/** Loads EK CA certificates (roots and intermediates) from PEM files. Throws ERR_CONFIG_INVALID. */
export async function loadEkAnchors(paths: readonly string[]): Promise<EkTrustAnchors> {
  const certs: X509Certificate[] = []
  for (const path of paths) {
    let pem: string
    try {
      pem = await readFile(path, 'utf8')
    } catch (cause) {
      throw new IdentityError('ERR_CONFIG_INVALID', `cannot read EK CA file ${path}`, { cause })
    }
    certs.push(...parsePemCertificates(pem, path))
  }
  const anchors = trustAnchorsFrom(certs)
  if (certs.length > 0 && anchors.roots.length === 0) {
    throw new IdentityError('ERR_CONFIG_INVALID', 'ek_ca_paths holds no self-signed root CA certificate')
  }
  return anchors
}

export const tpmServerPlugin: PluginDefinition<TpmServerConfig, ServerNodeAttestor> = {
  type: 'node_attestor',
  name: 'tpm',
  parseConfig: parseTpmServerConfig,
  async create(config, deps) {
    const anchors = await loadEkAnchors(config.ekCaPaths)
    return createTpmServerAttestor(config, anchors, deps)
  },
}
