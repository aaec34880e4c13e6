import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { AuditLog } from '../../../../src/audit/store/audit-log.js'
import { AuditLogReader } from '../../../../src/audit/store/log-reader.js'
import { tempDir } from '../../../helpers/temp.js'
import { ORIGIN, sampleEvent } from '../helpers.js'

/** Appends settle only after the WAL's fdatasync (injected here to hold and fail it); a failed sync fails closed. */

const turn = () => new Promise((r) => setImmediate(r))

describe('AuditLog durability', () => {
  let tmp: { dir: string; cleanup: () => void }
  let log: AuditLog | undefined
  let syncs: { done: (err: Error | null) => void }[]
  afterEach(async () => {
    for (const s of syncs.splice(0)) s.done(null)
    await log?.close()
    tmp.cleanup()
  })
  const open = () => {
    tmp = tempDir('wal-sync-')
    syncs = []
    log = AuditLog.open({ path: join(tmp.dir, 'a.sqlite3'), origin: ORIGIN, syncJournal: (_fd, done) => syncs.push({ done }) })
    return log
  }

  it('an append resolves only after its batch is synced; two syncs run at once, later batches share the next', async () => {
    const l = open()
    const settled: number[] = []
    const a = l.append(sampleEvent(1)).then((r) => settled.push(r.seq))
    await turn()
    await turn()
    expect(syncs).toHaveLength(1)
    expect(settled).toEqual([])
    // written (a reader sees it), not yet acknowledged
    const reader = AuditLogReader.open(join(tmp.dir, 'a.sqlite3'))
    expect(reader.tail(5)).toHaveLength(1)
    reader.close()
    // the second batch's sync starts at once, beside the first
    const b = l.append(sampleEvent(2)).then((r) => settled.push(r.seq))
    await turn()
    await turn()
    expect(syncs).toHaveLength(2)
    // the third and fourth wait for a free sync, together
    const c = l.append(sampleEvent(3)).then((r) => settled.push(r.seq))
    await turn()
    const d = l.append(sampleEvent(4)).then((r) => settled.push(r.seq))
    await turn()
    await turn()
    expect(syncs).toHaveLength(2)
    // the second sync ends first: its batch waits for the first (acknowledged in commit order)
    syncs.pop()!.done(null)
    await turn()
    await turn()
    expect(settled).toEqual([])
    expect(syncs).toHaveLength(2)
    syncs.shift()!.done(null)
    await Promise.all([a, b])
    expect(settled).toEqual([1, 2])
    syncs.shift()!.done(null)
    await Promise.all([c, d])
    expect(settled).toEqual([1, 2, 3, 4])
    expect(syncs).toHaveLength(0)
  })

  it('a failed sync also refuses a younger batch whose own sync succeeded', async () => {
    const l = open()
    const a = l.append(sampleEvent(1))
    await turn()
    await turn()
    const b = l.append(sampleEvent(2))
    await turn()
    await turn()
    expect(syncs).toHaveLength(2)
    syncs.pop()!.done(null)
    syncs.shift()!.done(Object.assign(new Error('EIO'), { code: 'EIO' }))
    await expect(a).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    await expect(b).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    await expect(l.append(sampleEvent(3))).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
  })

  it('a failed sync rejects its batch with ERR_AUDIT_UNAVAILABLE and every later append (fail closed)', async () => {
    const l = open()
    const a = l.append(sampleEvent(1))
    await turn()
    await turn()
    syncs.shift()!.done(Object.assign(new Error('EIO'), { code: 'EIO' }))
    await expect(a).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    await expect(l.append(sampleEvent(2))).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
  })
})
