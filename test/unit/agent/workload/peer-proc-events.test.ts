/**
 * The Workload API re-check driven by the kernel's process events
 * (src/agent/workload/proc-events.ts): a caller's /proc is re-read in full
 * only when the kernel reported an exec or an id change of it, after lost
 * events, on a connection's first call and after an attestation; without
 * the events (injected open failure) on every call. Real processes, built
 * helpers; the kernel's events need root (CI runs as root).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { loadPeerCredAddon, PeerTrackingServer } from '../../../../src/agent/workload/peer.js'
import { openKernelProcEvents, PeerChangeWatcher, type ProcEventsDrain, type ProcEventSource } from '../../../../src/agent/workload/proc-events.js'
import { noteProcReads } from '../../../../src/agent/workload/proc-reads.js'
import { nullLogger, type Logger } from '../../../../src/common/log/logger.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { tempDir } from '../../../helpers/temp.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run these tests as root (kernel process events, setuid helpers)')

const NOBODY = 65534

/** Reads commands on stdin and answers each with a line: the id changes under test, or an exec. */
const IDS_HELPER_C = String.raw`
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <unistd.h>
int main(void) {
  char line[512];
  printf("ready\n"); fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    int r = 0;
    if (strcmp(line, "setresuid") == 0) r = setresuid(65534, 65534, 65534);
    else if (strcmp(line, "setresgid") == 0) r = setresgid(65534, 65534, 65534);
    else if (strcmp(line, "setfsuid") == 0) { setfsuid(65534); r = setfsuid(-1) == 65534 ? 0 : -1; }
    else if (strcmp(line, "setgroups") == 0) { gid_t g = 4242; r = setgroups(1, &g); }
    else if (strncmp(line, "exec ", 5) == 0) { execl(line + 5, line + 5, (char *)NULL); r = -1; }
    printf(r == 0 ? "done\n" : "failed\n"); fflush(stdout);
  }
  return 0;
}
`

/**
 * The attack of issue 17 item 1 against a bare tracker: connect, fork; the
 * child runs the client with the connection as fd 3 and a pipe to the
 * parent as fd 4; the parent waits for a byte on the pipe, then execs TARGET.
 */
const ATTACK_C = String.raw`
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc != 5) return 2;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX;
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
  int p[2];
  if (pipe(p) != 0) return 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    if (dup2(s, 3) < 0 || dup2(p[1], 4) < 0) _exit(1);
    char ppid[32]; snprintf(ppid, sizeof ppid, "%d", (int)getppid());
    execl(argv[3], argv[3], argv[4], ppid, (char *)NULL);
    _exit(1);
  }
  close(p[1]);
  char b;
  if (read(p[0], &b, 1) != 1) return 1;
  execl(argv[2], argv[2], (char *)NULL);
  return 1;
}
`

const SLEEPER_C = String.raw`
#include <unistd.h>
int main(void) { sleep(120); return 0; }
`

/**
 * The attack's child: one Recheck call on the inherited connection, a byte
 * to the parent, then (once the parent runs as effective root, its exec
 * done) a second call; prints both answers as JSON.
 */
const CLIENT_MJS = String.raw`
import net from 'node:net'
import http2 from 'node:http2'
import { readFileSync, writeSync } from 'node:fs'
const [ppid] = process.argv.slice(2)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const sock = new net.Socket({ fd: 3, readable: true, writable: true })
const session = http2.connect('http://localhost', { createConnection: () => sock })
session.on('error', () => {})
function recheck() {
  return new Promise((resolve) => {
    const req = session.request({ ':method': 'POST', ':path': '/t.T/Recheck', 'content-type': 'application/grpc', te: 'trailers' })
    req.end(Buffer.alloc(5))
    let data = Buffer.alloc(0)
    req.on('data', (d) => (data = Buffer.concat([data, d])))
    req.on('close', () => resolve(data.length >= 5 ? data.subarray(5).toString() : 'no answer'))
  })
}
const before = await recheck()
writeSync(4, 'x')
let euid = -1
for (let i = 0; i < 2400 && euid !== 0; i++) {
  await sleep(25)
  try { euid = Number(/\nUid:\t\d+\t(\d+)/.exec(readFileSync('/proc/' + ppid + '/status', 'utf8'))[1]) } catch {}
}
// Past its exec: the new program runs (its comm is the sleeper's).
for (let i = 0; i < 2400 && readFileSync('/proc/' + ppid + '/comm', 'utf8').trim() !== 'suid-sleeper'; i++) await sleep(25)
await sleep(50)
const after = await recheck()
console.log(JSON.stringify({ before, parentEuid: euid, after }))
process.exit(0)
`

/** A source that drains what the test hands it. */
function fakeSource(): ProcEventSource & { next: ProcEventsDrain[]; drains: number } {
  const s = {
    next: [] as ProcEventsDrain[],
    drains: 0,
    drain(): ProcEventsDrain {
      s.drains++
      return s.next.shift() ?? { tgids: [], overflow: false }
    },
    close() {},
  }
  return s
}

let tmp: ReturnType<typeof tempDir>
let idsHelper = ''
let attack = ''
let suidSleeper = ''
let client = ''

beforeAll(() => {
  tmp = tempDir('ppe-')
  chmodSync(tmp.dir, 0o755) // uid 65534 must reach the programs and the socket
  const cc = (name: string, src: string) => {
    writeFileSync(join(tmp.dir, `${name}.c`), src)
    execFileSync('cc', ['-O2', '-o', join(tmp.dir, name), join(tmp.dir, `${name}.c`)])
    return join(tmp.dir, name)
  }
  idsHelper = cc('ids-helper', IDS_HELPER_C)
  attack = cc('attack', ATTACK_C)
  suidSleeper = cc('suid-sleeper', SLEEPER_C)
  if (isRoot) {
    chownSync(suidSleeper, 0, 0)
    chmodSync(suidSleeper, 0o4755) // setuid root
  }
  client = join(tmp.dir, 'client.mjs')
  writeFileSync(client, CLIENT_MJS, { mode: 0o644 })
})
afterAll(() => tmp.cleanup())

/** The ids helper, running as the test's user; `send` a command and wait for its answer line. */
function startHelper() {
  const c = spawn(idsHelper, [], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  c.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const said = async (word: string, count = 1) => {
    await vi.waitFor(() => expect(out.split('\n').filter((l) => l === word).length).toBeGreaterThanOrEqual(count), { timeout: 10_000 })
  }
  let commands = 0
  const send = async (cmd: string) => {
    commands++
    c.stdin.write(`${cmd}\n`)
    if (!cmd.startsWith('exec ')) {
      await vi.waitFor(() => expect(out.split('\n').filter((l) => l === 'done' || l === 'failed').length).toBe(commands), { timeout: 10_000 })
      expect(out.trim().split('\n').at(-1)).toBe('done')
    }
  }
  return { c, said, send, out: () => out }
}

describe.runIf(isRoot)('kernel process events (native addon)', () => {
  it('reports the exec and the uid and gid changes of a process by its pid, and nothing of a quiet one', async () => {
    const addon = loadPeerCredAddon()
    const source = openKernelProcEvents(addon)
    const h = startHelper()
    try {
      await h.said('ready')
      const seen = new Set<number>()
      const drainInto = () => {
        const d = source.drain()
        expect(d.overflow).toBe(false)
        for (const t of d.tgids) seen.add(t)
      }
      drainInto()
      seen.clear()
      drainInto()
      expect(seen.has(h.c.pid!)).toBe(false)
      for (const cmd of ['setresgid', 'setresuid']) {
        await h.send(cmd)
        drainInto() // the call has returned: its event is queued
        expect(seen.has(h.c.pid!), cmd).toBe(true)
        seen.clear()
      }
      h.c.stdin.write('exec /bin/cat\n')
      await vi.waitFor(() => expect(readlinkSync(`/proc/${h.c.pid}/exe`)).toMatch(/cat$/), { timeout: 10_000 })
      h.c.stdin.write('echo\n')
      await vi.waitFor(() => expect(h.out()).toContain('echo\n'), { timeout: 10_000 }) // cat runs: its exec returned
      drainInto()
      expect(seen.has(h.c.pid!)).toBe(true)
    } finally {
      h.c.kill()
      source.close()
    }
  })
})

describe('PeerTrackingServer with the kernel process events', () => {
  let pts: PeerTrackingServer | undefined
  let grpcServer: grpc.Server
  const helpers: ChildProcess[] = []
  beforeEach(() => {
    grpcServer = new grpc.Server()
  })
  afterEach(async () => {
    await pts?.close()
    pts = undefined
    grpcServer.forceShutdown()
    for (const c of helpers.splice(0)) c.kill('SIGKILL')
  })

  /**
   * A tracker whose connections are credited to `pid` (or, without it, to the
   * real peer) and a client that asks it to re-check the caller: 'ok', or the
   * code it threw.
   */
  async function rig(name: string, opts: { pid?: () => number; openProcEvents?: () => ProcEventSource; log?: Logger }) {
    const socketPath = join(tmp.dir, `${name}.sock`)
    const id = (b: Buffer) => b
    pts = new PeerTrackingServer({
      socketPath,
      grpcServer,
      log: opts.log ?? nullLogger,
      ...(opts.pid ? { getPeerCred: () => ({ pid: opts.pid!(), uid: process.geteuid!(), gid: process.getegid!() }) } : {}),
      ...(opts.openProcEvents ? { openProcEvents: opts.openProcEvents } : {}),
    })
    const tracker = pts
    const method = {
      path: '/t.T/Recheck',
      requestStream: false,
      responseStream: false,
      requestSerialize: id,
      requestDeserialize: id,
      responseSerialize: id,
      responseDeserialize: id,
    }
    grpcServer.addService(
      { Recheck: method },
      {
        Recheck: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
          try {
            tracker.assertPeerAlive(tracker.peerOf(call))
            cb(null, Buffer.from('ok'))
          } catch (err) {
            cb(null, Buffer.from((err as { code?: string }).code ?? String(err)))
          }
        },
      },
    )
    await pts.listen()
    const c = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure())
    const ask = () =>
      new Promise<string>((resolve, reject) => c.makeUnaryRequest(method.path, id, id, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r!.toString()))))
    return { ask, close: () => c.close(), socketPath }
  }

  async function helperRig(name: string, openProcEvents?: () => ProcEventSource, log?: Logger) {
    const h = startHelper()
    helpers.push(h.c)
    await h.said('ready')
    const r = await rig(name, { pid: () => h.c.pid!, ...(openProcEvents ? { openProcEvents } : {}), ...(log ? { log } : {}) })
    return { h, r }
  }

  describe.runIf(isRoot)('real events', () => {
    it('a quiet caller: the first call reads /proc in full, later calls only check that it is alive', async () => {
      const { r } = await helperRig('quiet')
      try {
        expect(pts!.watchesProcEvents).toBe(true)
        for (let i = 0; i < 20; i++) expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(1)
      } finally {
        r.close()
      }
    })

    it.each([
      { cmd: 'setresuid', event: 'PROC_EVENT_UID' },
      { cmd: 'setresgid', event: 'PROC_EVENT_GID' },
      { cmd: 'setfsuid', event: 'PROC_EVENT_UID (filesystem uid only)' },
    ])('refuses once the connecting process called $cmd ($event)', async ({ cmd }) => {
      const log = captureLogger()
      const { h, r } = await helperRig(`ids-${cmd}`, undefined, log)
      try {
        expect(await r.ask()).toBe('ok')
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(1)
        await h.send(cmd)
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED') // and stays refused
        expect(log.lines.find((l) => l.msg.includes('credentials changed'))?.fields).toMatchObject({ pid: h.c.pid })
      } finally {
        r.close()
      }
    })

    it('refuses once the connecting process exec()ed another (not setuid) program (PROC_EVENT_EXEC)', async () => {
      const log = captureLogger()
      const { h, r } = await helperRig('exec', undefined, log)
      try {
        expect(await r.ask()).toBe('ok')
        expect(await r.ask()).toBe('ok')
        h.c.stdin.write('exec /bin/cat\n')
        // Only once cat is the program (a line sent earlier could sit in the helper's stdio buffer).
        await vi.waitFor(() => expect(readlinkSync(`/proc/${h.c.pid}/exe`)).toMatch(/cat$/), { timeout: 10_000 })
        h.c.stdin.write('echo\n')
        await vi.waitFor(() => expect(h.out()).toContain('echo\n'), { timeout: 10_000 }) // cat runs: the exec returned
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        expect(log.lines.some((l) => l.msg.includes('executable changed'))).toBe(true)
      } finally {
        r.close()
      }
    })

    it('re-reads /proc in full after an attestation of the caller, even without an event (setgroups)', async () => {
      const { h, r } = await helperRig('attested')
      try {
        expect(await r.ask()).toBe('ok')
        await h.send('setgroups') // no process event
        expect(await r.ask()).toBe('ok') // documented: a setgroups() alone waits for the next full read
        noteProcReads(h.c.pid!) // an attestation read the caller's /proc
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
      } finally {
        r.close()
      }
    })
  })

  describe('injected events', () => {
    it('a change reported for the caller: the next call reads /proc in full and refuses', async () => {
      const src = fakeSource()
      const { h, r } = await helperRig('fake-tgid', () => src)
      try {
        expect(await r.ask()).toBe('ok')
        await h.send('setgroups') // unseen by the fake source until it says so
        expect(await r.ask()).toBe('ok')
        src.next.push({ tgids: [h.c.pid! + 1], overflow: false }) // another process
        expect(await r.ask()).toBe('ok')
        src.next.push({ tgids: [h.c.pid!], overflow: false })
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
      } finally {
        r.close()
      }
    })

    it('lost events (overflow): every connection reads /proc in full at its next call', async () => {
      const src = fakeSource()
      const { h, r } = await helperRig('fake-overflow', () => src)
      try {
        expect(await r.ask()).toBe('ok')
        await h.send('setgroups')
        src.next.push({ tgids: [], overflow: true })
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
      } finally {
        r.close()
      }
    })

    it('a passing full re-check makes the connection clean again; a failing one keeps it refused', async () => {
      const src = fakeSource()
      const { h, r } = await helperRig('fake-clean', () => src)
      try {
        expect(await r.ask()).toBe('ok')
        src.next.push({ tgids: [h.c.pid!], overflow: false })
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(2)
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(2)
        src.next.push({ tgids: [h.c.pid!], overflow: false })
        await h.send('setresuid')
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED') // no new event, still dirty
        expect(pts!.fullRechecks).toBe(4)
      } finally {
        r.close()
      }
    })

    it("a connection's first call reads /proc in full: a change between accept and the first call is refused", async () => {
      const src = fakeSource()
      const { h, r } = await helperRig('fake-first', () => src)
      try {
        expect(await r.ask()).toBe('ok')
        // A second connection, accepted now; the caller changes before its first call.
        const r2 = await (async () => {
          const c = new grpc.Client(`unix:${r.socketPath}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
          await new Promise<void>((res, rej) => c.waitForReady(Date.now() + 5000, (e) => (e ? rej(e) : res())))
          return c
        })()
        try {
          await vi.waitFor(() => expect(pts!.connectionCount).toBe(2))
          await h.send('setgroups')
          const id = (b: Buffer) => b
          const answer = await new Promise<string>((res, rej) =>
            r2.makeUnaryRequest('/t.T/Recheck', id, id, Buffer.alloc(0), (e, v) => (e ? rej(e) : res(v!.toString()))),
          )
          expect(answer).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        } finally {
          r2.close()
        }
      } finally {
        r.close()
      }
    })

    it('a drain that fails: warns once, then every call reads /proc in full', async () => {
      const log = captureLogger()
      let fail = false
      const src: ProcEventSource = {
        drain: () => {
          if (fail) throw Object.assign(new Error('recvmmsg failed'), { code: 'EBADF' })
          return { tgids: [], overflow: false }
        },
        close: () => {},
      }
      const { h, r } = await helperRig('fake-broken', () => src, log)
      try {
        expect(await r.ask()).toBe('ok')
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(1)
        fail = true
        expect(await r.ask()).toBe('ok')
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(3)
        await h.send('setgroups')
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        expect(log.lines.filter((l) => l.level === 'warn' && l.msg.includes('Kernel process events failed'))).toHaveLength(1)
      } finally {
        r.close()
      }
    })

    it('without the events (open fails): logs once at info, reads /proc in full on every call and refuses a change', async () => {
      const log = captureLogger()
      const { h, r } = await helperRig(
        'fallback',
        () => {
          throw Object.assign(new Error('socket(NETLINK_CONNECTOR) failed'), { code: 'EPROTONOSUPPORT' })
        },
        log,
      )
      try {
        expect(pts!.watchesProcEvents).toBe(false)
        expect(await r.ask()).toBe('ok')
        expect(await r.ask()).toBe('ok')
        expect(pts!.fullRechecks).toBe(2)
        await h.send('setgroups')
        expect(await r.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        const infos = log.lines.filter((l) => l.msg.includes('Kernel process events unavailable'))
        expect(infos).toHaveLength(1)
        expect(infos[0]!.level).toBe('info')
      } finally {
        r.close()
      }
    })
  })

  /**
   * Issue 17 item 1 against the tracker, with and without the kernel's
   * events: uid 65534 connects, forks a child that keeps the connection, and
   * execs a setuid-root binary; the child's second call must be refused.
   */
  describe.runIf(isRoot).each([
    { mode: 'kernel process events', open: undefined },
    {
      mode: 'no process events (open fails)',
      open: () => {
        throw Object.assign(new Error('bind(CN_IDX_PROC) failed'), { code: 'EPERM' })
      },
    },
  ])('setuid exec after connect, $mode', ({ open }) => {
    it('the child of the connecting process is refused once its parent runs as effective root', async () => {
      const r = await rig(`suid-${open ? 'fallback' : 'events'}`, { ...(open ? { openProcEvents: open } : {}) })
      try {
        expect(pts!.watchesProcEvents).toBe(open === undefined)
        const child = spawn(attack, [r.socketPath, suidSleeper, process.execPath, client], {
          uid: NOBODY,
          gid: NOBODY,
          cwd: '/',
          stdio: ['ignore', 'pipe', 'inherit'],
        })
        helpers.push(child)
        let out = ''
        child.stdout.on('data', (d: Buffer) => (out += d.toString()))
        await vi.waitFor(() => expect(out).toContain('\n'), { timeout: 60_000, interval: 100 })
        const outcome = JSON.parse(out.split('\n')[0]!) as { before: string; parentEuid: number; after: string }
        expect(outcome).toEqual({ before: 'ok', parentEuid: 0, after: 'ERR_WORKLOAD_CREDENTIALS_CHANGED' })
      } finally {
        r.close()
      }
    }, 90_000)
  })
})

describe('PeerChangeWatcher', () => {
  it('marks only the connections of the pids reported, all of them after an overflow, and forgets unregistered ones', () => {
    const src = fakeSource()
    const w = new PeerChangeWatcher(src, () => {})
    const a = w.register(101)
    const a2 = w.register(101)
    const b = w.register(202)
    for (const x of [a, a2, b]) {
      const { needed, mark } = w.needsRecheck(x)
      expect(needed).toBe(true) // first call
      w.checked(x, mark)
    }
    expect(w.needsRecheck(a).needed).toBe(false)
    src.next.push({ tgids: [101, 303], overflow: false })
    expect(w.needsRecheck(b).needed).toBe(false)
    expect(w.needsRecheck(a).needed).toBe(true)
    expect(w.needsRecheck(a2).needed).toBe(true)
    w.checked(a, w.needsRecheck(a).mark)
    w.checked(a2, w.needsRecheck(a2).mark)
    src.next.push({ tgids: [], overflow: true })
    expect(w.needsRecheck(a).needed).toBe(true)
    expect(w.needsRecheck(b).needed).toBe(true)
    w.checked(b, w.needsRecheck(b).mark)
    w.unregister(b)
    src.next.push({ tgids: [202], overflow: false })
    expect(w.needsRecheck(b).needed).toBe(false) // no longer watched
    noteProcReads(202)
    expect(w.needsRecheck(b).needed).toBe(true) // but an attestation mark still counts
  })
})
