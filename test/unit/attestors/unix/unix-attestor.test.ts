import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, realpathSync, renameSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  DEFAULT_WORKLOAD_SIZE_LIMIT,
  UnixWorkloadAttestor,
  parseUnixAttestorConfig,
  unixWorkloadAttestorPlugin,
} from '../../../../attestors/workload/unix/index.js'
import { NameDb, parseAccountFile } from '../../../../attestors/workload/unix/name-db.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { tempDir } from '../../../helpers/temp.js'

/** Builds a fake /proc/<pid> with an exe symlink, plus passwd/group files. */
function fakeSystem(dir: string, opts: { exeContent?: Buffer } = {}) {
  const proc = join(dir, 'proc')
  mkdirSync(join(proc, '77'), { recursive: true })
  // A status that disagrees with the caller: the attestor must never read it.
  writeFileSync(join(proc, '77', 'status'), 'Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t0\n')
  const exe = join(dir, 'bin', 'agent-tool')
  mkdirSync(join(dir, 'bin'))
  writeFileSync(exe, opts.exeContent ?? Buffer.from('#!/bin/true\n'))
  symlinkSync(exe, join(proc, '77', 'exe'))
  const passwd = join(dir, 'passwd')
  const group = join(dir, 'group')
  writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbad line\nalice2:x:1000:1000::/:/bin/sh\n')
  writeFileSync(group, 'root:x:0:\nalice:x:1000:\ndocker:x:999:alice\n')
  return { proc, exe, passwd, group }
}

/** A caller as the kernel recorded it at connect (SO_PEERCRED, SO_PEERGROUPS). */
const caller = (pid: number, uid: number, gid: number, groups: number[] = []) => ({ pid, uid, gid, groups })
const CALLER = caller(77, 1000, 1000, [999, 4242])

describe('unix workload attestor: fake /proc', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('ux-')
  })
  afterEach(() => tmp.cleanup())

  it.each([
    {
      title: 'ids, names (first passwd line wins), supplementary groups, path and sha256',
      cfg: { discoverWorkloadPath: true, workloadSizeLimit: DEFAULT_WORKLOAD_SIZE_LIMIT },
      who: CALLER,
      expected: (exe: string, sha: string) => [
        'uid:1000',
        'user:alice',
        'gid:1000',
        'group:alice',
        'supplementary_gid:999',
        'supplementary_group:docker',
        'supplementary_gid:4242',
        `path:${exe}`,
        `sha256:${sha}`,
      ],
    },
    {
      title: 'a uid without a passwd line: no user selector',
      cfg: { discoverWorkloadPath: false, workloadSizeLimit: 0 },
      who: caller(77, 1001, 1000, [999, 4242]),
      expected: () => ['uid:1001', 'gid:1000', 'group:alice', 'supplementary_gid:999', 'supplementary_group:docker', 'supplementary_gid:4242'],
    },
    {
      title: 'no Groups values, hashing off (-1)',
      cfg: { discoverWorkloadPath: true, workloadSizeLimit: -1 },
      who: caller(77, 0, 0),
      expected: (exe: string) => ['uid:0', 'user:root', 'gid:0', 'group:root', `path:${exe}`],
    },
    {
      title: 'binary over the size limit: path but no sha256',
      cfg: { discoverWorkloadPath: true, workloadSizeLimit: 4 },
      who: caller(77, 0, 0),
      expected: (exe: string) => ['uid:0', 'user:root', 'gid:0', 'group:root', `path:${exe}`],
    },
  ])('$title', async ({ cfg, who, expected }) => {
    const sys = fakeSystem(tmp.dir)
    const a = new UnixWorkloadAttestor({ ...cfg, log: nullLogger, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    const sha = createHash('sha256').update(readFileSync(sys.exe)).digest('hex')
    expect(await a.attest(who, {})).toEqual(expected(sys.exe, sha))
  })

  it('takes ids and thousands of groups from the caller record, never from /proc/<pid>/status', async () => {
    const groups = Array.from({ length: 3000 }, (_, i) => 20000 + i)
    const sys = fakeSystem(tmp.dir)
    const a = new UnixWorkloadAttestor({
      discoverWorkloadPath: false,
      workloadSizeLimit: 0,
      log: nullLogger,
      procRoot: sys.proc,
      passwdPath: sys.passwd,
      groupPath: sys.group,
    })
    const sel = await a.attest(caller(77, 5, 6, groups), {})
    expect(sel.filter((s) => s.startsWith('supplementary_gid:'))).toEqual(groups.map((g) => `supplementary_gid:${g}`))
    expect(sel.slice(0, 2)).toEqual(['uid:5', 'gid:6'])
    expect(sel).not.toContain('uid:0') // what the fake status file says
    expect(await a.attest(caller(77, 7, 8), {})).toEqual(['uid:7', 'gid:8'])
  })

  it('caches the digest per file version: same-size rewrite, new file and concurrent callers', async () => {
    const sys = fakeSystem(tmp.dir, { exeContent: Buffer.from('version-1') })
    const a = new UnixWorkloadAttestor({
      discoverWorkloadPath: true,
      workloadSizeLimit: 0,
      log: nullLogger,
      procRoot: sys.proc,
      passwdPath: sys.passwd,
      groupPath: sys.group,
    })
    const shaOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`
    const digest = async () => (await a.attest(CALLER, {})).find((s) => s.startsWith('sha256:'))
    utimesSync(sys.exe, 1000, 1000)
    const both = await Promise.all([digest(), digest()])
    expect(both).toEqual([shaOf(Buffer.from('version-1')), shaOf(Buffer.from('version-1'))])
    expect(await digest()).toBe(shaOf(Buffer.from('version-1')))
    // Same size and mtime forced back: ctime still changes, so the cache must not answer.
    writeFileSync(sys.exe, 'version-2')
    utimesSync(sys.exe, 1000, 1000)
    expect(await digest()).toBe(shaOf(Buffer.from('version-2')))
    writeFileSync(sys.exe + '.new', 'other binary')
    renameSync(sys.exe + '.new', sys.exe)
    expect(await digest()).toBe(shaOf(Buffer.from('other binary')))
  })

  it('logs when the size limit skips hashing', async () => {
    const sys = fakeSystem(tmp.dir, { exeContent: Buffer.alloc(64) })
    const log = captureLogger()
    const a = new UnixWorkloadAttestor({
      discoverWorkloadPath: true,
      workloadSizeLimit: 10,
      log,
      procRoot: sys.proc,
      passwdPath: sys.passwd,
      groupPath: sys.group,
    })
    const sel = await a.attest(CALLER, {})
    expect(sel.some((s) => s.startsWith('sha256:'))).toBe(false)
    expect(log.lines.some((l) => l.level === 'warn' && l.fields.pid === 77)).toBe(true)
  })

  it('fails with ERR_WORKLOAD_ATTESTATION_FAILED when the executable of a missing process is needed', async () => {
    const sys = fakeSystem(tmp.dir)
    const a = new UnixWorkloadAttestor({
      discoverWorkloadPath: true,
      workloadSizeLimit: 0,
      log: nullLogger,
      procRoot: sys.proc,
      passwdPath: sys.passwd,
      groupPath: sys.group,
    })
    await expect(a.attest(caller(78, 1000, 1000), {})).rejects.toMatchObject({ code: 'ERR_WORKLOAD_ATTESTATION_FAILED' })
  })

  it.each([
    { title: 'pid 0', who: caller(0, 1, 1) },
    { title: 'negative uid', who: caller(5, -1, 1) },
    { title: 'fractional gid', who: caller(5, 1, 1.5) },
    { title: 'group out of range', who: caller(5, 1, 1, [2 ** 32]) },
  ])('throws RangeError for an invalid caller: $title', async ({ who }) => {
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger })
    await expect(a.attest(who, {})).rejects.toBeInstanceOf(RangeError)
  })
})

describe('unix workload attestor: the test process itself', () => {
  it('returns the selectors of this process from the real /proc and /etc files', async () => {
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: 0, log: nullLogger })
    const uid = process.geteuid!()
    const gid = process.getegid!()
    const sel = await a.attest(
      caller(
        process.pid,
        uid,
        gid,
        process.getgroups!().filter((g) => g !== gid),
      ),
      {},
    )
    expect(sel[0]).toBe(`uid:${uid}`)
    expect(sel).toContain(`gid:${gid}`)
    const passwd = parseAccountFile(readFileSync('/etc/passwd', 'utf8'))
    expect(passwd.has(uid)).toBe(true)
    expect(sel).toContain(`user:${passwd.get(uid)}`)
    const exe = realpathSync(process.execPath)
    expect(sel).toContain(`path:${exe}`)
    expect(sel).toContain(`sha256:${createHash('sha256').update(readFileSync(exe)).digest('hex')}`)
  })
})

describe('NameDb', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('nd-')
  })
  afterEach(() => tmp.cleanup())

  it('re-reads the file only when its stat changes', async () => {
    const path = join(tmp.dir, 'group')
    writeFileSync(path, 'a:x:1:\n')
    utimesSync(path, 1000, 1000)
    const db = new NameDb(path, { watch: false })
    expect(await db.lookup(1)).toBe('a')
    writeFileSync(path, 'b:x:1:\n') // same size
    utimesSync(path, 1000, 1000) // same mtime: cached value kept
    expect(await db.lookup(1)).toBe('a')
    utimesSync(path, 2000, 2000)
    expect(await db.lookup(1)).toBe('b')
  })

  it('sees edits and replacements through its directory watch, with no stat per lookup', async () => {
    const path = join(tmp.dir, 'passwd')
    writeFileSync(path, 'a:x:1:1::/:/bin/sh\n')
    const now = 0 // frozen: the periodic re-check never comes due
    const db = new NameDb(path, { now: () => now })
    try {
      expect(await db.lookup(1)).toBe('a')
      writeFileSync(path, 'bb:x:1:1::/:/bin/sh\n') // edited in place
      await vi.waitFor(async () => expect(await db.lookup(1)).toBe('bb'), { timeout: 5000, interval: 10 })
      writeFileSync(`${path}+`, 'ccc:x:1:1::/:/bin/sh\n') // replaced, as useradd/vipw do
      renameSync(`${path}+`, path)
      await vi.waitFor(async () => expect(await db.lookup(1)).toBe('ccc'), { timeout: 5000, interval: 10 })
    } finally {
      db.close()
    }
  })

  it('re-checks a file its watch cannot see (a symlink elsewhere) once the re-check interval has passed', async () => {
    mkdirSync(join(tmp.dir, 'real'))
    const real = join(tmp.dir, 'real', 'group')
    writeFileSync(real, 'a:x:1:\n')
    mkdirSync(join(tmp.dir, 'etc'))
    const path = join(tmp.dir, 'etc', 'group')
    symlinkSync(real, path)
    const clock = new FakeClock(0)
    const db = new NameDb(path, { now: () => clock.now(), recheckMs: 1000 })
    try {
      expect(await db.lookup(1)).toBe('a')
      writeFileSync(real, 'bb:x:1:\n')
      await new Promise((r) => setTimeout(r, 100)) // any event would have arrived
      expect(await db.lookup(1)).toBe('a') // no event in etc/, not yet due
      clock.advance(1000)
      expect(await db.lookup(1)).toBe('bb')
    } finally {
      db.close()
    }
  })

  it('checks the stat on every lookup once closed', async () => {
    const path = join(tmp.dir, 'group')
    writeFileSync(path, 'a:x:1:\n')
    const db = new NameDb(path, { now: () => 0 })
    expect(await db.lookup(1)).toBe('a')
    db.close()
    writeFileSync(path, 'bb:x:1:\n')
    expect(await db.lookup(1)).toBe('bb')
  })

  it('yields no names for a missing file', async () => {
    expect(await new NameDb(join(tmp.dir, 'none')).lookup(0)).toBeUndefined()
  })
})

describe('unix plugin definition and config', () => {
  it.each([
    { title: 'defaults', raw: undefined, expected: { discoverWorkloadPath: true, workloadSizeLimit: 128 * 1024 * 1024 } },
    { title: 'explicit', raw: { discover_workload_path: false, workload_size_limit: -1 }, expected: { discoverWorkloadPath: false, workloadSizeLimit: -1 } },
  ])('parses $title', ({ raw, expected }) => {
    expect(parseUnixAttestorConfig(raw)).toEqual(expected)
  })

  it.each([
    { title: 'unknown key', raw: { discover_workload_paths: true } },
    { title: 'wrong type', raw: { workload_size_limit: '1MiB' } },
    { title: 'below -1', raw: { workload_size_limit: -2 } },
  ])('rejects $title with ERR_CONFIG_INVALID', ({ raw }) => {
    expect(() => parseUnixAttestorConfig(raw)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })

  it('creates a working attestor', async () => {
    expect(unixWorkloadAttestorPlugin).toMatchObject({ type: 'workload_attestor', name: 'unix' })
    const a = await unixWorkloadAttestorPlugin.create(unixWorkloadAttestorPlugin.parseConfig({ discover_workload_path: false }), {
      log: nullLogger,
      clock: new FakeClock(),
      trustDomain: TrustDomain.fromString('example.org'),
      dataDir: '/nonexistent',
    })
    expect(await a.attest(caller(process.pid, process.geteuid!(), process.getegid!()), {})).toContain(`uid:${process.geteuid!()}`)
  })
})
