import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { SsfStore } from '../../../../src/broker/store/ssf-store.js'
import { run } from '../../../../src/cli/commands/signal.js'
import { tempDir } from '../../../helpers/temp.js'

const tmp = tempDir('wsig-')
afterEach(() => vi.restoreAllMocks())

async function output(args: string[]): Promise<{ code: number; out: string }> {
  let out = ''
  vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
    out += String(c)
    return true
  })
  const code = await run(args)
  vi.restoreAllMocks()
  return { code, out }
}

describe('warrant signal list', () => {
  it('lists received signals with their decision and outcome, as text or JSON, from a given id', async () => {
    const path = join(tmp.dir, 'ssf.sqlite3')
    const store = SsfStore.open(path)
    const base = {
      issuer: 'https://tx.example.org',
      eventType: 'https://schemas.openid.net/secevent/caep/event-type/credential-change',
      subject: { format: 'uri', uri: 'spiffe://example.org/a' },
      receivedAt: 1_800_000_000,
    }
    store.recordReceived({
      ...base,
      jti: 'j1',
      decision: { action: 'revoke', rule: 0, level: 'instance', value: 'spiffe://example.org/a' },
      outcome: 'applied',
    })
    store.recordReceived({ ...base, jti: 'j2', decision: { action: 'record', reason: 'no_rule' }, outcome: 'recorded' })
    store.close()
    const text = await output(['list', '--store', path])
    expect(text.code).toBe(0)
    expect(text.out).toContain('Found 2 signals')
    expect(text.out).toContain('action: revoke instance spiffe://example.org/a (rule 0)')
    const json = await output(['list', '--store', path, '--since', '1', '--output', 'json'])
    expect((JSON.parse(json.out) as { signals: { jti: string; outcome: string }[] }).signals.map((s) => [s.jti, s.outcome])).toEqual([['j2', 'recorded']])
  })

  it('refuses a missing store and bad flags', async () => {
    await expect(run(['list', '--store', join(tmp.dir, 'none.sqlite3')])).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
    await expect(run(['list', '--since', 'x'])).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })
})
