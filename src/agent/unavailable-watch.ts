/**
 * The server client as the agent's manager uses it (SvidSigner,
 * InstanceClient), watched: a call the server answers UNAVAILABLE (it is
 * going down, or cannot reach its datastore) while the Sync stream may still
 * be open reports the server it went to, so the agent can fail over. Calls
 * that were sent to a server the agent has already left report nothing.
 */
import * as grpc from '@grpc/grpc-js'
import { IdentityError } from '../errors/identity-error.js'
import type { InstanceClient, SvidSigner } from './manager/ports.js'

/** True when the server could not serve the call (gRPC UNAVAILABLE), not when it refused it. */
export function isServerUnavailable(err: unknown): boolean {
  return err instanceof IdentityError && err.details?.grpc_code === grpc.status.UNAVAILABLE
}

type Watched = SvidSigner & InstanceClient

export function watchUnavailable(client: Watched & { readonly address: string }, onUnavailable: (address: string) => void): Watched {
  const watch =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const address = client.address
      try {
        return await call(...args)
      } catch (err) {
        if (isServerUnavailable(err) && client.address === address) onUnavailable(address)
        throw err
      }
    }
  return {
    batchNewX509Svid: watch((params, opts) => client.batchNewX509Svid(params, opts)),
    newJwtSvid: watch((entryId, audience, opts) => client.newJwtSvid(entryId, audience, opts)),
    registerInstance: watch((entryId, proc, opts) => client.registerInstance(entryId, proc, opts)),
    endInstance: watch((instanceId, opts) => client.endInstance(instanceId, opts)),
    endAllInstances: watch((opts) => client.endAllInstances(opts)),
  }
}
