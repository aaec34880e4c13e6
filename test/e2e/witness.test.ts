/**
 * `warrant witness` as real processes: a witness serving C2SP tlog-witness
 * add-checkpoint over HTTP, and `witness submit` getting an audit log's latest
 * checkpoint cosigned, first from nothing, then as the log grows (the 409 and
 * a consistency proof), while a forked copy of the log gets no cosignature.
 * `audit verify --witness-key` accepts the cosigned checkpoint and refuses
 * one without that witness's cosignature.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AuditLog } from '../../src/audit/store/audit-log.js'
import { warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { buildLog, checkpointKey, ORIGIN, sampleEvent } from '../unit/audit/helpers.js'

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'warrant.js')

describe('warrant witness (C2SP tlog-witness)', () => {
  const tmp = tempDir('wwitness-')
  let key: Awaited<ReturnType<typeof checkpointKey>>
  let log: string
  let witness: ChildProcess | undefined
  let url = ''
  let wkey = ''

  beforeAll(async () => {
    key = await checkpointKey()
    log = await buildLog(tmp.dir, 30, [10, 25], key.signer)
    const kg = await warrant(['witness', 'keygen', '--name', 'witness.example/w1', '--key-file', join(tmp.dir, 'w.pem')])
    expect(kg.code, kg.stderr).toBe(0)
    expect(statSync(join(tmp.dir, 'w.pem')).mode & 0o777).toBe(0o600)
    witness = spawn(
      process.execPath,
      [
        BIN,
        'witness',
        'run',
        '--name',
        'witness.example/w1',
        '--key-file',
        join(tmp.dir, 'w.pem'),
        '--log-key',
        key.vkey,
        '--state',
        join(tmp.dir, 'state.json'),
        '--listen',
        '127.0.0.1:0',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    const lines = createInterface({ input: witness.stdout! })
    for await (const l of lines) {
      if (l.startsWith('WARRANT_WITNESS_URL=')) url = l.slice('WARRANT_WITNESS_URL='.length)
      if (l.startsWith('WARRANT_WITNESS_KEY=')) wkey = l.slice('WARRANT_WITNESS_KEY='.length)
      if (url && wkey) break
    }
    expect(wkey).toBe(kg.stdout.trim())
  }, 60_000)
  afterAll(() => {
    witness?.kill('SIGTERM')
    tmp.cleanup()
  })

  it('cosigns the latest checkpoint; audit verify accepts it with the witness key and refuses it with another', async () => {
    const out = join(tmp.dir, 'cosigned-25.note')
    const s = await warrant(['witness', 'submit', '--log', log, '--witness', url, '--witness-key', wkey, '--out', out])
    expect(s.code, s.stderr).toBe(0)
    expect(readFileSync(out, 'utf8')).toMatch(/\n— witness\.example\/w1 /)
    const v = await warrant(['audit', 'verify', '--log', log, '--key', key.vkey, '--checkpoint', out, '--witness-key', wkey])
    expect(v.code, v.stderr).toBe(0)
    const other = await warrant(['witness', 'keygen', '--name', 'witness.example/w1', '--key-file', join(tmp.dir, 'other.pem')])
    const bad = await warrant(['audit', 'verify', '--log', log, '--key', key.vkey, '--checkpoint', out, '--witness-key', other.stdout.trim()])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/ERR_AUDIT_CHECKPOINT_INVALID/)
  })

  it('a grown log is cosigned again after a consistency proof; a fork of it is refused', async () => {
    const grown = AuditLog.open({ path: log, origin: ORIGIN, signer: key.signer })
    for (let i = 30; i < 40; i++) await grown.append(sampleEvent(i))
    await grown.checkpoint()
    await grown.close()
    const out = join(tmp.dir, 'cosigned-40.note')
    const s = await warrant(['witness', 'submit', '--log', log, '--witness', url, '--witness-key', wkey, '--out', out, '--output', 'json'])
    expect(s.code, s.stderr).toBe(0)
    expect(JSON.parse(s.stdout)).toMatchObject({ ok: true, size: 40, witness: 'witness.example/w1' })
    expect(JSON.parse(readFileSync(join(tmp.dir, 'state.json'), 'utf8'))[ORIGIN].size).toBe(40)

    const forkDir = join(tmp.dir, 'fork')
    mkdirSync(forkDir)
    const fork = AuditLog.open({ path: join(forkDir, 'audit.db'), origin: ORIGIN, signer: key.signer })
    for (let i = 0; i < 45; i++) await fork.append(sampleEvent(i === 5 ? 99 : i))
    await fork.checkpoint()
    await fork.close()
    const f = await warrant([
      'witness',
      'submit',
      '--log',
      join(forkDir, 'audit.db'),
      '--witness',
      url,
      '--witness-key',
      wkey,
      '--out',
      join(tmp.dir, 'fork.note'),
    ])
    expect(f.code).not.toBe(0)
    expect(f.stderr).toMatch(/witness refused the checkpoint \(HTTP 422\)/)
    expect(JSON.parse(readFileSync(join(tmp.dir, 'state.json'), 'utf8'))[ORIGIN].size).toBe(40)
  })
})
