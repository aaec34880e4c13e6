import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  DEFAULT_WORKLOAD_SIZE_LIMIT,
  UnixWorkloadAttestor,
  parseProcStatus,
  parseUnixAttestorConfig,
  unixWorkloadAttestorPlugin,
} from '../../../../attestors/workload/unix/index.js'
import { NameDb, parseAccountFile } from '../../../../attestors/workload/unix/name-db.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { tempDir } from '../../../helpers/temp.js'

/** Builds a fake /proc/<pid> with a status file and an exe symlink, plus passwd/group files. */
function fakeSystem(dir: string, opts: { status: string; exeContent?: Buffer }) {
  const proc = join(dir, 'proc')
  mkdirSync(join(proc, '77'), { recursive: true })
  writeFileSync(join(proc, '77', 'status'), opts.status)
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

const STATUS = 'Name:\tagent-tool\nUid:\t1000\t1001\t1000\t1001\nGid:\t1000\t1000\t1000\t1000\nGroups:\t999 4242 \n'

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
      status: 'Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t999 4242 \n',
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
      title: 'effective uid is used (real 1000, effective 1001 without a passwd line)',
      cfg: { discoverWorkloadPath: false, workloadSizeLimit: 0 },
      status: STATUS,
      expected: () => ['uid:1001', 'gid:1000', 'group:alice', 'supplementary_gid:999', 'supplementary_group:docker', 'supplementary_gid:4242'],
    },
    {
      title: 'no Groups values, hashing off (-1)',
      cfg: { discoverWorkloadPath: true, workloadSizeLimit: -1 },
      status: 'Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n',
      expected: (exe: string) => ['uid:0', 'user:root', 'gid:0', 'group:root', `path:${exe}`],
    },
    {
      title: 'binary over the size limit: path but no sha256',
      cfg: { discoverWorkloadPath: true, workloadSizeLimit: 4 },
      status: 'Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n',
      expected: (exe: string) => ['uid:0', 'user:root', 'gid:0', 'group:root', `path:${exe}`],
    },
  ])('$title', async ({ cfg, status, expected }) => {
    const sys = fakeSystem(tmp.dir, { status })
    const a = new UnixWorkloadAttestor({ ...cfg, log: nullLogger, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    const sha = createHash('sha256').update(readFileSync(sys.exe)).digest('hex')
    expect(await a.attest(77, {})).toEqual(expected(sys.exe, sha))
  })

  it('reads a status larger than its first read buffer (thousands of groups), and again after it changes', async () => {
    const groups = Array.from({ length: 3000 }, (_, i) => 20000 + i)
    const sys = fakeSystem(tmp.dir, { status: `Name:\tbig\nUid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\t${groups.join(' ')}\n` })
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    const sel = await a.attest(77, {})
    expect(sel.filter((s) => s.startsWith('supplementary_gid:'))).toEqual(groups.map((g) => `supplementary_gid:${g}`))
    expect(sel.slice(0, 2)).toEqual(['uid:5', 'gid:6'])
    writeFileSync(join(sys.proc, '77', 'status'), 'Uid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\n')
    expect(await a.attest(77, {})).toEqual(['uid:7', 'gid:8'])
  })

  it('caches the digest per file version: same-size rewrite, new file and concurrent callers', async () => {
    const sys = fakeSystem(tmp.dir, { status: STATUS, exeContent: Buffer.from('version-1') })
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: 0, log: nullLogger, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    const shaOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`
    const digest = async () => (await a.attest(77, {})).find((s) => s.startsWith('sha256:'))
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
    const sys = fakeSystem(tmp.dir, { status: STATUS, exeContent: Buffer.alloc(64) })
    const log = captureLogger()
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: 10, log, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    const sel = await a.attest(77, {})
    expect(sel.some((s) => s.startsWith('sha256:'))).toBe(false)
    expect(log.lines.some((l) => l.level === 'warn' && l.fields.pid === 77)).toBe(true)
  })

  it.each([
    { title: 'missing process', pid: 78, status: STATUS },
    { title: 'status without Uid line', pid: 77, status: 'Name:\tx\nGid:\t1\t1\t1\t1\n' },
  ])('fails with ERR_WORKLOAD_ATTESTATION_FAILED: $title', async ({ pid, status }) => {
    const sys = fakeSystem(tmp.dir, { status })
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger, procRoot: sys.proc, passwdPath: sys.passwd, groupPath: sys.group })
    await expect(a.attest(pid, {})).rejects.toMatchObject({ code: 'ERR_WORKLOAD_ATTESTATION_FAILED' })
  })

  it('throws RangeError for an invalid pid', async () => {
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger })
    await expect(a.attest(0, {})).rejects.toBeInstanceOf(RangeError)
  })
})

describe('unix workload attestor: the test process itself', () => {
  it('returns the selectors of this process from the real /proc and /etc files', async () => {
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: true, workloadSizeLimit: 0, log: nullLogger })
    const sel = await a.attest(process.pid, {})
    const uid = process.geteuid!()
    const gid = process.getegid!()
    expect(sel[0]).toBe(`uid:${uid}`)
    expect(sel).toContain(`gid:${gid}`)
    const passwd = parseAccountFile(readFileSync('/etc/passwd', 'utf8'))
    expect(passwd.has(uid)).toBe(true)
    expect(sel).toContain(`user:${passwd.get(uid)}`)
    const exe = realpathSync(process.execPath)
    expect(sel).toContain(`path:${exe}`)
    expect(sel).toContain(`sha256:${createHash('sha256').update(readFileSync(exe)).digest('hex')}`)
    const statusGroups = parseProcStatus(readFileSync(`/proc/${process.pid}/status`, 'utf8')).groups
    for (const g of statusGroups) expect(sel).toContain(`supplementary_gid:${g}`)
  })
})

describe('unix workload attestor: a child process', () => {
  const isRoot = process.getuid?.() === 0
  /** Supplementary groups the child takes: their Groups: line alone outgrows the 4 KiB first read. */
  const manyGroups = Array.from({ length: 1500 }, (_, i) => 100_000 + i)
  /** A child that prints "ready", and on SIGUSR1 (as root) takes other ids and prints "changed". */
  function child() {
    const script = `
      process.on('SIGUSR1', () => {
        process.setgroups([4242, ...${JSON.stringify(manyGroups)}]); process.setegid(65534); process.seteuid(65534)
        process.stdout.write('changed\\n')
      })
      process.stdout.write('ready\\n')
      setInterval(() => {}, 1000)`
    const c = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    const said = (word: string) =>
      new Promise<void>((resolve) => {
        const check = () => out.includes(word) && resolve()
        c.stdout.on('data', (d: Buffer) => {
          out += d.toString()
          check()
        })
        check()
      })
    const exited = new Promise((resolve) => c.once('exit', resolve))
    return { c, said, exited }
  }

  it(`reads the process afresh on every call: ${isRoot ? 'new ids after it changes them, ' : ''}failure once it has exited`, async () => {
    const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger })
    const { c, said, exited } = child()
    try {
      await said('ready')
      const pid = c.pid!
      const first = await a.attest(pid, {})
      expect(first[0]).toBe(`uid:${process.geteuid!()}`)
      expect(await a.attest(pid, {})).toEqual(first)
      if (isRoot) {
        c.kill('SIGUSR1')
        await said('changed')
        const after = await a.attest(pid, {})
        expect(after).toEqual(expect.arrayContaining(['uid:65534', 'gid:65534', 'supplementary_gid:4242']))
        expect(after.filter((s) => s.startsWith('supplementary_gid:'))).toEqual(['supplementary_gid:4242', ...manyGroups.map((g) => `supplementary_gid:${g}`)])
        expect(after).not.toContain('uid:0')
      }
      c.kill()
      await exited
      await expect(a.attest(pid, {})).rejects.toMatchObject({ code: 'ERR_WORKLOAD_ATTESTATION_FAILED' })
    } finally {
      c.kill()
    }
  })
})

describe('unix workload attestor: kept /proc/<pid>/status files', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  /** Descriptors of this process open on `/proc/<pid>/status`. */
  const statusFds = (pid: number) =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === `/proc/${pid}/status`
      } catch {
        return false
      }
    }).length

  it('keeps one file per calling process and closes it once that process stops calling', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] })
    const c = spawn('sleep', ['30'], { stdio: 'ignore' })
    try {
      const a = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: 0, log: nullLogger })
      const first = await a.attest(c.pid!, {})
      expect(await a.attest(c.pid!, {})).toEqual(first)
      expect(statusFds(c.pid!)).toBe(1)
      vi.advanceTimersByTime(3_000)
      expect(await a.attest(c.pid!, {})).toEqual(first) // still in use: kept
      vi.advanceTimersByTime(3_000)
      expect(statusFds(c.pid!)).toBe(1)
      vi.advanceTimersByTime(10_000)
      expect(statusFds(c.pid!)).toBe(0)
      expect(await a.attest(c.pid!, {})).toEqual(first) // opened again when it calls again
    } finally {
      c.kill()
    }
  })
})

describe('parseProcStatus', () => {
  it.each([
    { title: 'field names inside other lines are not lines', text: 'Name:\tUid:\t9\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\n', expected: { uid: 2, gid: 6, groups: [] } },
    { title: 'four ids: effective wins', text: 'Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10\n', expected: { uid: 2, gid: 6, groups: [9, 10] } },
    { title: 'single id', text: 'Uid:\t7\nGid:\t8\n', expected: { uid: 7, gid: 8, groups: [] } },
    { title: 'empty Groups line, last line without newline', text: 'Groups:\t\nUid:\t0\t0\t0\t0\nGid:\t4294967294', expected: { uid: 0, gid: 4294967294, groups: [] } },
    { title: 'malformed group values are dropped', text: 'Uid:\t1\t2\nGid:\t3\t4\nGroups:\t5 x6 7 99999999999 \n', expected: { uid: 2, gid: 4, groups: [5, 7] } },
  ])('$title', ({ text, expected }) => {
    expect(parseProcStatus(text)).toEqual(expected)
    expect(parseProcStatus(Buffer.from(`${text}\nUid:\t5\t5\t5\t5\nGroups:\t8\n`), Buffer.byteLength(text))).toEqual(expected) // bytes past the length are not read
  })

  it.each([
    { title: 'no Uid line', text: 'Gid:\t1\n' },
    { title: 'non-numeric effective uid', text: 'Uid:\t1\t-2\t3\t4\nGid:\t1\n' },
    { title: 'Uid only inside another line', text: 'Name:\tUid:\t9\nGid:\t1\n' },
  ])('rejects $title', ({ text }) => {
    expect(() => parseProcStatus(text)).toThrow(expect.objectContaining({ code: 'ERR_WORKLOAD_ATTESTATION_FAILED' }))
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
    expect(await a.attest(process.pid, {})).toContain(`uid:${process.geteuid!()}`)
  })
})
