/**
 * Client side of node attestation: sends the attestor's payload with a CSR of
 * the agent key, answers every challenge through the plugin, and returns the
 * agent SVID the server issued.
 */
import type { KeyObject } from 'node:crypto'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { AgentNodeAttestor, CallOpts } from '../plugin/contracts.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import { createCsr } from '../spiffe/x509-svid/csr.js'
import type { AttestOutcome, ServerClient } from './server-client.js'

export interface AttestNodeOptions extends CallOpts {
  client: Pick<ServerClient, 'attest'>
  attestorName: string
  attestor: AgentNodeAttestor
  /** The agent's private key; the SVID is issued for its public key. */
  privateKey: KeyObject
  trustDomain: TrustDomain
  log: Logger
}

export async function attestNode(opts: AttestNodeOptions): Promise<AttestOutcome> {
  const callOpts: CallOpts = opts.signal ? { signal: opts.signal } : {}
  const csr = await createCsr({ privateKey: opts.privateKey })
  const payload = await opts.attestor.payload(callOpts)
  let rounds = 0
  const out = await opts.client.attest(
    { attestor: opts.attestorName, payload, csr },
    (challenge) => {
      rounds++
      return opts.attestor.answer(challenge, callOpts)
    },
    callOpts,
  )
  if (out.svidChain.length === 0) throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'server returned no agent SVID')
  let id: SpiffeId
  try {
    id = SpiffeId.fromString(out.agentId)
  } catch (cause) {
    throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'server returned an invalid agent ID', { cause })
  }
  if (!id.trustDomain.equals(opts.trustDomain)) {
    throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', `agent ID ${id.toString()} is not in trust domain ${opts.trustDomain.name}`)
  }
  opts.log.info({ [F.AGENT_ID]: out.agentId, [F.PLUGIN_NAME]: opts.attestorName, rounds }, 'Node attestation succeeded')
  return out
}
