import { readFileSync } from 'node:fs'
import { parse } from 'smol-toml'
import { IdentityError } from '../../errors/identity-error.js'

/** Reads a TOML file into a plain object. Throws ERR_CONFIG_INVALID with the file and position. */
export function readTomlFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `cannot read config file ${path}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`, { cause })
  }
  return parseToml(text, path)
}

export function parseToml(text: string, source = 'config'): Record<string, unknown> {
  try {
    return parse(text)
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `${source}: ${(cause as Error).message.split('\n')[0]}`, { cause })
  }
}
