import { pino } from 'pino'
import type { Logger } from '../common/log/logger.js'

/**
 * The only place pino is created. JSON lines on stderr (stdout stays free for
 * command output) with fixed field names; secrets are redacted as a backstop —
 * code never logs them in the first place.
 */
export function createLogger(opts: { level?: string; name: string; destination?: number }): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'token',
          'pin',
          'password',
          'private_key',
          'privateKey',
          'svid',
          'jwt',
          '*.token',
          '*.pin',
          '*.password',
          '*.private_key',
          '*.privateKey',
          '*.jwt',
          'req.headers.authorization',
        ],
        censor: '[redacted]',
      },
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: opts.destination ?? 2, sync: false }),
  )
}
