import { status as Status, type UntypedServiceImplementation } from '@grpc/grpc-js'
import { GrpcStatusError } from './errors.js'
import { serverStream, unary } from './handlers.js'
import type { Logger } from '../log/logger.js'

export type ServingStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN'

/**
 * `grpc.health.v1.Health`, for the agent's public socket (what
 * `spire-agent healthcheck` calls). The overall service ('') and every name in
 * `services` report SERVING while the listener is up; `setStatus` changes it
 * and pushes the change to watchers.
 */
export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>()
  readonly #watchers = new Set<() => void>()

  constructor(services: readonly string[]) {
    this.#statuses.set('', 'SERVING')
    for (const s of services) this.#statuses.set(s, 'SERVING')
  }

  setStatus(service: string, status: 'SERVING' | 'NOT_SERVING'): void {
    this.#statuses.set(service, status)
    for (const w of this.#watchers) w()
  }

  /** Marks everything NOT_SERVING (on shutdown). */
  shutdown(): void {
    for (const s of this.#statuses.keys()) this.#statuses.set(s, 'NOT_SERVING')
    for (const w of this.#watchers) w()
  }

  handlers(log: Logger): UntypedServiceImplementation {
    return {
      Check: unary(log, 'Health.Check', async (req: { service?: string }) => {
        const status = this.#statuses.get(req.service ?? '')
        if (status === undefined) throw new GrpcStatusError(Status.NOT_FOUND, 'unknown service')
        return { status }
      }),
      Watch: serverStream(log, 'Health.Watch', async (req: { service?: string }, sink) => {
        const service = req.service ?? ''
        let last: ServingStatus | undefined
        const push = () => {
          const status = this.#statuses.get(service) ?? 'SERVICE_UNKNOWN'
          if (status !== last) {
            last = status
            sink.send({ status })
          }
        }
        push()
        this.#watchers.add(push)
        try {
          await new Promise<void>((resolve) => {
            if (sink.signal.aborted) resolve()
            else sink.signal.addEventListener('abort', () => resolve(), { once: true })
          })
        } finally {
          this.#watchers.delete(push)
        }
      }),
    }
  }
}
