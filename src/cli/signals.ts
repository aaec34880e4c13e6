import type { Logger } from '../common/log/logger.js'

/** Resolves once SIGTERM or SIGINT arrived and `stop()` finished (in-flight work drained by `stop`). */
export function runUntilSignal(log: Logger, stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) return
      stopping = true
      log.info({ signal: sig }, 'Signal received')
      stop().then(resolve, resolve)
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })
}
