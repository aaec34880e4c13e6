import { X509Certificate } from 'node:crypto'
import { IdentityError } from '../../../src/errors/index.js'
import type { Logger } from '../../../src/common/log/logger.js'
import type { AgentNodeAttestor, CallOpts, PluginDefinition } from '../../../src/plugin/contracts.js'
import { createAk, createEk, loadAk, readEkCertificate, type TpmKeyKind } from '../../../src/tpm/attest-client.js'
import { TpmClient } from '../../../src/tpm/client.js'
import { TPM_RC, isTpmError } from '../../../src/tpm/errors.js'
import { TpmReader, bytesEqual } from '../../../src/tpm/marshal.js'
import { TPM_ALG, TPM_PERSISTENT_HANDLE, encodeTpm2bPublic, publicKeyFromTpmtPublic, type TpmtPublic } from '../../../src/tpm/structures.js'
import { ekTemplate } from '../../../src/tpm/templates.js'
import { openTransport } from '../../../src/tpm/transport.js'
import { parseTpmAgentConfig, type TpmAgentConfig } from './agent-config.js'
import { decodeChallenge, encodeAnswer, encodePayload, type PcrBank } from './payload.js'

const BANK_ALG: Record<PcrBank, number> = { sha1: TPM_ALG.SHA1, sha256: TPM_ALG.SHA256, sha384: TPM_ALG.SHA384 }
/** TCG EK Credential Profile persistent EK handles. */
const PERSISTENT_EK: Record<TpmKeyKind, number> = { rsa: TPM_PERSISTENT_HANDLE.EK_RSA, ecc: 0x81010002 }

type Co = { signal?: AbortSignal }
const co = (opts: CallOpts): Co => (opts.signal === undefined ? {} : { signal: opts.signal })

/** True when a persistent object has the shape of the default EK of `kind` (same type, nameAlg, attributes, policy). */
function isDefaultEk(pub: TpmtPublic, kind: TpmKeyKind): boolean {
  const t = ekTemplate(kind)
  return pub.type === t.type && pub.nameAlg === t.nameAlg && pub.objectAttributes === t.objectAttributes && bytesEqual(pub.authPolicy, t.authPolicy)
}

/**
 * Runs `fn` with the EK: the provisioned persistent EK when it has the default
 * template's shape (no key generation), otherwise a freshly created primary,
 * which is flushed afterwards.
 */
async function withEkHandle<R>(
  client: TpmClient,
  kind: TpmKeyKind,
  fn: (ek: { handle: number; public: TpmtPublic; publicBytes: Uint8Array }) => Promise<R>,
  opts: Co,
): Promise<R> {
  try {
    const p = await client.readPublic(PERSISTENT_EK[kind], opts)
    if (isDefaultEk(p.public, kind)) return await fn({ handle: PERSISTENT_EK[kind], public: p.public, publicBytes: p.publicBytes })
  } catch (err) {
    if (!isTpmError(err, TPM_RC.HANDLE)) throw err
  }
  return client.withFlush(createEk(client, kind, opts), fn, opts)
}

/** The content of a whole-buffer TPM2B (the challenge carries TPM2B_ID_OBJECT / TPM2B_ENCRYPTED_SECRET). */
function tpm2bContent(b: Uint8Array): Uint8Array {
  const r = new TpmReader(b)
  const v = r.tpm2b()
  r.expectEnd('TPM2B')
  return v
}

export interface TpmAgentDeps {
  log: Logger
  /** Opens a client for one attestation step (default: the configured transport). */
  openClient?: () => TpmClient
}

/**
 * Agent half of the `tpm` node attestor. `payload` reads the EK certificate
 * and public area and creates an ECC P-256 AK that certifies its own creation;
 * `answer` reloads that AK, activates the server's credential with the EK and
 * quotes the requested PCRs with the server's nonce. The TPM connection is
 * opened per step and every transient object is flushed.
 */
export function createTpmAgentAttestor(config: TpmAgentConfig, deps: TpmAgentDeps): AgentNodeAttestor {
  const open = deps.openClient ?? (() => new TpmClient(openTransport(config.transportUri)))
  let akBlobs: { private: Uint8Array; publicBytes: Uint8Array } | undefined

  async function withClient<R>(fn: (c: TpmClient) => Promise<R>): Promise<R> {
    const client = open()
    try {
      return await fn(client)
    } finally {
      await client.close().catch(() => undefined)
    }
  }

  return {
    async payload(opts) {
      const o = co(opts)
      return withClient(async (client) => {
        let ekCert = await readEkCertificate(client, config.ekType, o)
        const ek = await withEkHandle(client, config.ekType, async (e) => ({ public: e.public, publicBytes: e.publicBytes }), o)
        if (ekCert !== undefined) {
          let matches = false
          try {
            matches = new X509Certificate(ekCert).publicKey.equals(publicKeyFromTpmtPublic(ek.public))
          } catch {
            matches = false
          }
          if (!matches) {
            deps.log.warn({ ek_type: config.ekType }, 'EK certificate does not match the EK; sending the EK without it')
            ekCert = undefined
          }
        }
        const ak = await client.withFlush(createAk(client, 'ecc', o), async (a) => a, o)
        akBlobs = { private: ak.private, publicBytes: ak.publicBytes }
        return encodePayload({
          ...(ekCert === undefined ? {} : { ekCert }),
          ekPublic: encodeTpm2bPublic(ek.publicBytes),
          akPublic: encodeTpm2bPublic(ak.publicBytes),
          akCreationData: ak.creationData,
          akCreationAttest: ak.certifyCreation.attest,
          akCreationSignature: ak.certifyCreation.signature,
        })
      })
    },

    async answer(challenge, opts) {
      const c = decodeChallenge(challenge)
      const blobs = akBlobs
      if (blobs === undefined) throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'tpm answer requested before the payload')
      const o = co(opts)
      const bank = BANK_ALG[c.pcrBank]
      return withClient(async (client) =>
        client.withFlush(
          loadAk(client, blobs, o),
          async (ak) => {
            const activatedSecret = await withEkHandle(
              client,
              config.ekType,
              (ek) => client.activateCredential(ak.handle, ek.handle, tpm2bContent(c.credentialBlob), tpm2bContent(c.encryptedSecret), o),
              o,
            )
            const quote = await client.quote(ak.handle, c.nonce, [{ hash: bank, pcrs: c.pcrs }], o)
            const read = await client.pcrRead([{ hash: bank, pcrs: c.pcrs }], o)
            const pcrValues = new Map<number, Uint8Array>()
            for (const v of read.values) if (v.hash === bank) pcrValues.set(v.pcr, v.digest)
            return encodeAnswer({ activatedSecret, quoteAttest: quote.attest, quoteSignature: quote.signature, pcrValues })
          },
          o,
        ),
      )
    },
  }
}

export const tpmAgentPlugin: PluginDefinition<TpmAgentConfig, AgentNodeAttestor> = {
  type: 'node_attestor',
  name: 'tpm',
  parseConfig: parseTpmAgentConfig,
  async create(config, deps) {
    return createTpmAgentAttestor(config, { log: deps.log })
  },
}
