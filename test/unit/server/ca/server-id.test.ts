import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { SERVER_ID_RE, serverIdFor } from '../../../../src/server/ca/server-id.js'
import { tempDir } from '../../../helpers/temp.js'

describe('serverIdFor', () => {
  let tmp: { dir: string; cleanup: () => void }
  beforeEach(() => {
    tmp = tempDir('sid-')
  })
  afterEach(() => tmp.cleanup())

  it('makes an ID once, keeps it in <data_dir>/server-id (0600) and returns it again', () => {
    const id = serverIdFor(tmp.dir)
    expect(id).toMatch(SERVER_ID_RE)
    expect(readFileSync(join(tmp.dir, 'server-id'), 'utf8')).toBe(`${id}\n`)
    expect(statSync(join(tmp.dir, 'server-id')).mode & 0o777).toBe(0o600)
    expect(serverIdFor(tmp.dir)).toBe(id)
  })

  it('two data directories get two IDs', () => {
    const other = tempDir('sid2-')
    try {
      expect(serverIdFor(tmp.dir)).not.toBe(serverIdFor(other.dir))
    } finally {
      other.cleanup()
    }
  })

  it('prefers server_id from the config, and writes nothing then', () => {
    expect(serverIdFor(tmp.dir, 'warrant-1')).toBe('warrant-1')
    expect(() => statSync(join(tmp.dir, 'server-id'))).toThrow()
  })

  it('refuses a stored ID that is not one (it names journals and keys)', () => {
    writeFileSync(join(tmp.dir, 'server-id'), '../../etc\n')
    expect(() => serverIdFor(tmp.dir)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }) as Error)
  })
})
