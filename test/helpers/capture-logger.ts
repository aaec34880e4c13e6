import type { Logger, LogFieldsObject } from '../../src/common/log/logger.js'

export interface CapturedLine {
  level: 'debug' | 'info' | 'warn' | 'error'
  fields: LogFieldsObject
  msg: string
}

/** A Logger that records every line, for asserting what was (and was not) logged. */
export function captureLogger(lines: CapturedLine[] = [], base: LogFieldsObject = {}): Logger & { lines: CapturedLine[] } {
  const mk = (level: CapturedLine['level']) => (fields: LogFieldsObject, msg: string) => {
    lines.push({ level, fields: { ...base, ...fields }, msg })
  }
  return {
    lines,
    debug: mk('debug'),
    info: mk('info'),
    warn: mk('warn'),
    error: mk('error'),
    child: (f: LogFieldsObject) => captureLogger(lines, { ...base, ...f }),
  }
}
