import { spawn } from 'node:child_process'
import { chmodSync, closeSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  PeerTrackingServer,
  RESET_BURST,
  getSocketPeerCred,
  loadPeerCredAddon,
  readProcessStartTime,
  type PeerInfo,
} from '../../../../src/agent/workload/peer.js'
import { parseProcCreds } from '../../../../src/agent/workload/proc-creds.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { isIdentityError } from '../../../../src/errors/index.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { tempDir } from '../../../helpers/temp.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run these tests as root (they spawn clients as uid 65534)')

/** Starts a child that connects to `socketPath` and prints its own pid/uid/gid, then waits to be killed. */
function connectChild(socketPath: string, ids?: { uid: number; gid: number }) {
  const script = `
    const s = require('node:net').connect(process.argv[1], () => {
      process.stdout.write(JSON.stringify({ pid: process.pid, uid: process.getuid(), gid: process.getgid() }) + '\\n')
    })
    s.on('error', (e) => { console.error(e.message); process.exit(1) })`
  const child = spawn(process.execPath, ['-e', script, socketPath], { stdio: ['ignore', 'pipe', 'inherit'], ...(ids ?? {}) })
  const reported = new Promise<{ pid: number; uid: number; gid: number }>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) resolve(JSON.parse(out))
    })
    child.on('exit', (code) => reject(new Error(`child exited with ${code}`)))
  })
  return { child, reported }
}

/** A server on `path` (world-connectable) that takes one connection and stops listening. */
function acceptOne(path: string): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve) => {
    const srv = net.createServer((s) => {
      resolve(s)
      srv.close()
    })
    srv.listen(path, () => chmodSync(path, 0o777))
  })
}

describe('SO_PEERCRED addon', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('pc-')
    chmodSync(tmp.dir, 0o755)
  })
  afterEach(() => tmp.cleanup())

  const cases = [{ title: 'same user as the test', ids: undefined }, ...(isRoot ? [{ title: 'uid/gid 65534 (nobody)', ids: { uid: 65534, gid: 65534 } }] : [])]
  it.each(cases)('reports the pid, uid and gid of a connecting child: $title', async ({ ids }) => {
    const path = join(tmp.dir, 'a.sock')
    const accepted = acceptOne(path)
    const { child, reported } = connectChild(path, ids)
    try {
      const [sock, childIds] = await Promise.all([accepted, reported])
      const cred = getSocketPeerCred(sock)
      // Supplementary groups from SO_PEERGROUPS: the same as the child's /proc status shows.
      const status = parseProcCreds(readFileSync(`/proc/${child.pid}/status`))!
      expect(cred).toEqual({ pid: child.pid, uid: childIds.uid, gid: childIds.gid, groups: status.groups })
      if (ids) expect(cred).toMatchObject(ids)
      sock.destroy()
    } finally {
      child.kill()
    }
  })

  it.each([
    { title: 'a closed fd', file: false, code: 'EBADF' },
    { title: 'a regular file', file: true, code: 'ENOTSOCK' },
  ])('throws an errno-coded error for $title', ({ file, code }) => {
    const path = join(tmp.dir, 'f')
    writeFileSync(path, 'x')
    const fd = openSync(path, 'r')
    if (!file) closeSync(fd)
    let err: unknown
    try {
      loadPeerCredAddon().getPeerCred(fd)
    } catch (e) {
      err = e
    } finally {
      if (file) closeSync(fd)
    }
    expect(err).toBeInstanceOf(Error)
    expect((err as NodeJS.ErrnoException).code).toBe(code)
  })

  it.each([
    { title: 'a string', arg: 'x', type: TypeError },
    { title: 'a negative fd', arg: -1, type: RangeError },
  ])('rejects $title as fd', ({ arg, type }) => {
    expect(() => loadPeerCredAddon().getPeerCred(arg as number)).toThrow(type)
  })
  it('gives a pidfd of the process that connected (SO_PEERPIDFD) and of a pid (pidfd_open); both report its exit', async () => {
    const a = loadPeerCredAddon()
    const path = join(tmp.dir, 'p.sock')
    const accepted = acceptOne(path)
    const { child, reported } = connectChild(path)
    const exited = new Promise((resolve) => child.once('exit', resolve))
    const fds: number[] = []
    try {
      const [sock] = await Promise.all([accepted, reported])
      const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd
      fds.push(a.getPeerPidfd!(fd), a.openPidfd!(child.pid!))
      for (const p of fds) expect(a.pidfdExited!(p)).toBe(false)
      child.kill()
      await exited
      for (const p of fds) expect(a.pidfdExited!(p)).toBe(true)
      let err: unknown
      try {
        a.openPidfd!(child.pid!)
      } catch (e) {
        err = e
      }
      expect((err as NodeJS.ErrnoException).code).toBe('ESRCH')
      sock.destroy()
    } finally {
      child.kill()
      for (const p of fds) closeSync(p)
    }
  })

  it.each([
    { title: 'getPeerPidfd of a regular file', call: (fd: number) => loadPeerCredAddon().getPeerPidfd!(fd), code: 'ENOTSOCK' },
    { title: 'pidfdExited of a file that is not a pidfd', call: (fd: number) => loadPeerCredAddon().pidfdExited!(fd), code: 'EBADF' },
  ])('pidfd calls throw errno-coded errors: $title', ({ call, code }) => {
    const path = join(tmp.dir, 'g')
    writeFileSync(path, 'x')
    const fd = openSync(path, 'r')
    let err: unknown
    try {
      if (code === 'EBADF') closeSync(fd)
      call(fd)
    } catch (e) {
      err = e
    } finally {
      if (code !== 'EBADF') closeSync(fd)
    }
    expect((err as NodeJS.ErrnoException).code).toBe(code)
  })

  it.each([
    { title: 'a string pid', call: () => loadPeerCredAddon().openPidfd!('1' as unknown as number), type: TypeError },
    { title: 'pid 0', call: () => loadPeerCredAddon().openPidfd!(0), type: RangeError },
    { title: 'a negative pidfd', call: () => loadPeerCredAddon().pidfdExited!(-1), type: RangeError },
  ])('pidfd calls reject $title', ({ call, type }) => {
    expect(call).toThrow(type)
  })
})

describe('readProcessStartTime', () => {
  let tmp: ReturnType<typeof tempDir>
  beforeEach(() => {
    tmp = tempDir('st-')
  })
  afterEach(() => tmp.cleanup())

  const fields = (comm: string, start: string) => {
    // pid (comm) state ppid ... : 52 fields; field 22 is starttime.
    const rest = Array.from({ length: 50 }, (_, i) => String(i + 3))
    rest[0] = 'S'
    rest[19] = start
    return `42 (${comm}) ${rest.join(' ')}\n`
  }

  it.each([
    { title: 'plain comm', comm: 'node', start: '123456' },
    { title: 'comm with spaces and parentheses', comm: 'a b) (c', start: '987' },
  ])('reads field 22 with $title', ({ comm, start }) => {
    mkdirSync(join(tmp.dir, '42'))
    writeFileSync(join(tmp.dir, '42', 'stat'), fields(comm, start))
    expect(readProcessStartTime(42, tmp.dir)).toBe(start)
  })

  it('returns undefined for a process that does not exist', () => {
    expect(readProcessStartTime(42, tmp.dir)).toBeUndefined()
  })

  it('reads a real start time for this process, stable across reads', () => {
    const a = readProcessStartTime(process.pid)
    expect(a).toMatch(/^\d+$/)
    expect(readProcessStartTime(process.pid)).toBe(a)
  })
})

describe('PeerTrackingServer', () => {
  let tmp: ReturnType<typeof tempDir>
  let pts: PeerTrackingServer | undefined
  let grpcServer: grpc.Server
  beforeEach(() => {
    tmp = tempDir('pt-')
    grpcServer = new grpc.Server()
  })
  afterEach(async () => {
    await pts?.close()
    pts = undefined
    grpcServer.forceShutdown()
    tmp.cleanup()
  })

  it('creates the directory 0755 and the socket 0777', async () => {
    const socketPath = join(tmp.dir, 'public', 'api.sock')
    pts = new PeerTrackingServer({ socketPath, grpcServer, log: nullLogger })
    await pts.listen()
    const dir = lstatSync(join(tmp.dir, 'public'))
    const sock = lstatSync(socketPath)
    expect(dir.mode & 0o777).toBe(0o755)
    expect(sock.isSocket()).toBe(true)
    expect(sock.mode & 0o777).toBe(0o777)
  })

  it('leaves the mode of an existing directory alone', async () => {
    const dir = join(tmp.dir, 'shared')
    mkdirSync(dir, { mode: 0o1777 })
    chmodSync(dir, 0o1777)
    pts = new PeerTrackingServer({ socketPath: join(dir, 'api.sock'), grpcServer, log: nullLogger })
    await pts.listen()
    expect(lstatSync(dir).mode & 0o7777).toBe(0o1777)
  })

  it('replaces a stale socket file', async () => {
    const socketPath = join(tmp.dir, 'api.sock')
    // A listener killed with SIGKILL leaves its socket file behind, as a crashed agent would.
    const script = `require('node:net').createServer().listen(process.argv[1], () => console.log('ready'))`
    const child = spawn(process.execPath, ['-e', script, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()))
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGKILL')
    await exited
    expect(lstatSync(socketPath).isSocket()).toBe(true)
    pts = new PeerTrackingServer({ socketPath, grpcServer, log: nullLogger })
    await pts.listen()
    expect(lstatSync(socketPath).isSocket()).toBe(true)
  })

  it('refuses to remove a path that is not a socket', async () => {
    const socketPath = join(tmp.dir, 'api.sock')
    writeFileSync(socketPath, 'not a socket')
    const p = new PeerTrackingServer({ socketPath, grpcServer, log: nullLogger })
    await expect(p.listen()).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' })
    expect(lstatSync(socketPath).isFile()).toBe(true)
  })

  it('closes connections whose process is already gone at accept time', async () => {
    const socketPath = join(tmp.dir, 'api.sock')
    pts = new PeerTrackingServer({ socketPath, grpcServer, log: nullLogger, readStartTime: () => undefined })
    await pts.listen()
    const closed = await new Promise<boolean>((resolve) => {
      const c = net.connect(socketPath)
      c.on('close', () => resolve(true))
      c.on('error', () => {})
      c.resume()
    })
    expect(closed).toBe(true)
    expect(pts.connectionCount).toBe(0)
  })

  it('rejects calls that did not come through a tracked connection', () => {
    pts = new PeerTrackingServer({ socketPath: join(tmp.dir, 'x.sock'), grpcServer, log: nullLogger })
    let err: unknown
    try {
      pts.peerOf({ getPeer: () => 'unknown' })
    } catch (e) {
      err = e
    }
    expect(isIdentityError(err, 'ERR_WORKLOAD_ATTESTATION_FAILED')).toBe(true)
  })

  const peer: PeerInfo = { id: 'p', pid: 4242, uid: 1, gid: 1, groups: [], startTime: '100' }
  it.each([
    { title: 'same start time', now: '100', ok: true },
    { title: 'pid reused by a newer process', now: '200', ok: false },
    { title: 'process exited', now: undefined, ok: false },
  ])('assertPeerAlive: $title', ({ now, ok }) => {
    pts = new PeerTrackingServer({ socketPath: join(tmp.dir, 'y.sock'), grpcServer, log: nullLogger, readStartTime: () => now })
    let err: unknown
    try {
      pts.assertPeerAlive(peer)
    } catch (e) {
      err = e
    }
    if (ok) expect(err).toBeUndefined()
    else expect(isIdentityError(err, 'ERR_WORKLOAD_ATTESTATION_FAILED')).toBe(true)
  })

  it.each([
    { pidfds: true, held: 'a pidfd of the caller' },
    { pidfds: false, held: "the caller's stat file (as on a kernel without pidfds)" },
  ])('assertPeerAlive checks $held: alive while the caller runs, fails once it has exited', async ({ pidfds }) => {
    const socketPath = join(tmp.dir, `alive-${pidfds}.sock`)
    const id = (b: Buffer) => b
    const caller = spawn('sleep', ['30'], { stdio: 'ignore' })
    const callerExited = new Promise((resolve) => caller.once('exit', resolve))
    const ownFds = () =>
      readdirSync('/proc/self/fd').map((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`)
        } catch {
          return ''
        }
      })
    const held = () => ({
      pidfds: ownFds().filter((l) => l === 'anon_inode:[pidfd]').length,
      statFiles: ownFds().filter((l) => l === `/proc/${caller.pid}/stat`).length,
    })
    const before = held()
    // The connection is credited to `caller` (pidfd_open of its pid, or its /proc/<pid>/stat kept open).
    pts = new PeerTrackingServer({ socketPath, grpcServer, log: nullLogger, getPeerCred: () => ({ pid: caller.pid!, uid: 0, gid: 0 }), pidfds })
    const tracker = pts
    const method = {
      path: '/t.T/Alive',
      requestStream: false,
      responseStream: false,
      requestSerialize: id,
      requestDeserialize: id,
      responseSerialize: id,
      responseDeserialize: id,
    }
    grpcServer.addService(
      { Alive: method },
      {
        Alive: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
          try {
            const peer = tracker.peerOf(call)
            tracker.assertPeerAlive(peer)
            cb(null, Buffer.from(`ok ${peer.pid}`))
          } catch (err) {
            cb(null, Buffer.from(isIdentityError(err, 'ERR_WORKLOAD_ATTESTATION_FAILED') ? 'failed' : `other ${String(err)}`))
          }
        },
      },
    )
    await pts.listen()
    const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure())
    const ask = () =>
      new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(method.path, id, id, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r!.toString()))),
      )
    try {
      expect(await ask()).toBe(`ok ${caller.pid}`)
      expect(await ask()).toBe(`ok ${caller.pid}`)
      expect(held()).toEqual(pidfds ? { pidfds: before.pidfds + 1, statFiles: 0 } : { pidfds: before.pidfds, statFiles: 1 })
      caller.kill()
      await callerExited // reaped: its /proc entry is gone, the same connection stays open
      expect(await ask()).toBe('failed')
      expect(pts.connectionCount).toBe(1)
    } finally {
      client.close()
      caller.kill()
    }
  })

  /**
   * A tracker whose connections are credited to `caller` with the ids the
   * kernel would have recorded at connect (`atConnect`), and a client that
   * asks it to re-check the caller: 'ok', or the error code it threw.
   */
  async function recheckRig(name: string, caller: { readonly pid?: number | undefined }, atConnect: { uid: number; gid: number }, log = nullLogger) {
    const socketPath = join(tmp.dir, `${name}.sock`)
    const id = (b: Buffer) => b
    pts = new PeerTrackingServer({ socketPath, grpcServer, log, getPeerCred: () => ({ pid: caller.pid!, ...atConnect }) })
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
    const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure())
    const ask = () =>
      new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(method.path, id, id, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r!.toString()))),
      )
    return { ask, close: () => client.close() }
  }

  /** A child that says "ready", and on a line on stdin runs `then` (node code). */
  function steppedChild(then: string) {
    const script = `
      process.stdout.write('ready\\n')
      process.stdin.once('data', () => { ${then}; process.stdout.write('done\\n') })
      setInterval(() => {}, 1000)`
    const c = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    const said = async (word: string) => {
      for (let i = 0; i < 400 && !out.includes(word); i++) await new Promise((r) => setTimeout(r, 25))
      if (!out.includes(word)) throw new Error(`child did not say ${word}`)
    }
    return { c, said, step: () => c.stdin.write('go\n') }
  }

  it.runIf(isRoot).each([
    { title: 'effective uid (seteuid)', then: 'process.seteuid(65534)' },
    { title: 'effective gid (setegid)', then: 'process.setegid(65534)' },
    // setgroups() emits no process event: when it is refused is tested in peer-proc-events.test.ts.
  ])('refuses with ERR_WORKLOAD_CREDENTIALS_CHANGED once the connecting process changed its $title', async ({ then }) => {
    const child = steppedChild(then)
    const log = captureLogger()
    try {
      await child.said('ready')
      const rig = await recheckRig('ids', child.c, { uid: 0, gid: 0 }, log)
      try {
        expect(await rig.ask()).toBe('ok')
        child.step()
        await child.said('done')
        expect(await rig.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
        const line = log.lines.find((l) => l.msg.includes('credentials changed'))
        expect(line?.fields).toMatchObject({ pid: child.c.pid, at_connect: { uid: 0, gid: 0 } })
        expect(line?.fields.now).not.toEqual((line?.fields.at_connect as { uids?: unknown }).uids)
      } finally {
        rig.close()
      }
    } finally {
      child.c.kill()
    }
  })

  it('refuses with ERR_WORKLOAD_CREDENTIALS_CHANGED once the connecting process exec()ed another executable', async () => {
    // sh reads a line, then replaces itself with sleep (same pid, same ids, another executable).
    const c = spawn('/bin/sh', ['-c', 'echo ready; read x; exec sleep 30'], { stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    try {
      await vi.waitFor(() => expect(out).toContain('ready'), { timeout: 10_000 })
      const exe = readlinkSync(`/proc/${c.pid}/exe`)
      const rig = await recheckRig('exe', c, { uid: process.geteuid!(), gid: process.getegid!() })
      try {
        expect(await rig.ask()).toBe('ok')
        c.stdin.write('go\n')
        await vi.waitFor(() => expect(readlinkSync(`/proc/${c.pid}/exe`)).not.toBe(exe), { timeout: 10_000 })
        expect(await rig.ask()).toBe('ERR_WORKLOAD_CREDENTIALS_CHANGED')
      } finally {
        rig.close()
      }
    } finally {
      c.kill()
    }
  })

  it('refuses a connection whose effective ids at accept are not those the kernel recorded at connect', async () => {
    const c = spawn('sleep', ['30'], { stdio: 'ignore' })
    const log = captureLogger()
    try {
      await vi.waitFor(() => expect(readlinkSync(`/proc/${c.pid}/exe`)).toContain('sleep'), { timeout: 10_000 })
      const rig = await recheckRig('accept', c, { uid: process.geteuid!() + 1, gid: process.getegid!() }, log)
      try {
        await expect(rig.ask()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE })
        expect(pts!.connectionCount).toBe(0)
        expect(log.lines.some((l) => l.msg.includes('Cannot identify workload connection') && String(l.fields.err).includes('changed'))).toBe(true)
      } finally {
        rig.close()
      }
    } finally {
      c.kill()
    }
  })

  it('closes a connection gracefully once its client has reset RESET_BURST streams, so no call fails', async () => {
    const socketPath = join(tmp.dir, 'r.sock')
    const id = (b: Buffer) => b
    let accepted = 0
    pts = new PeerTrackingServer({
      socketPath,
      grpcServer,
      log: nullLogger,
      getPeerCred: () => {
        accepted++
        return { pid: process.pid, uid: 0, gid: 0 }
      },
      now: () => 0, // no refill: the budget is exactly RESET_BURST
    })
    const tracker = pts
    const method = {
      path: '/t.T/S',
      requestStream: false,
      responseStream: true,
      requestSerialize: id,
      requestDeserialize: id,
      responseSerialize: id,
      responseDeserialize: id,
    }
    grpcServer.addService(
      { S: method },
      {
        S: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
          tracker.watchResets(call)
          call.write(Buffer.from('m'))
        },
      },
    )
    await pts.listen()
    const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure())
    const n = RESET_BURST * 2 + 200 // past nghttp2's own burst of 1,000 resets
    const outcomes: string[] = []
    for (let i = 0; i < n; i++) {
      outcomes.push(
        await new Promise<string>((resolve) => {
          const call = client.makeServerStreamRequest(method.path, id, id, Buffer.alloc(0))
          call.once('data', () => {
            call.cancel()
            resolve('message')
          })
          call.on('error', (e: grpc.ServiceError) => {
            if (e.code !== grpc.status.CANCELLED) resolve(`error ${e.code}: ${e.details}`)
          })
        }),
      )
    }
    client.close()
    expect(outcomes.filter((o) => o !== 'message')).toEqual([])
    expect(accepted).toBeGreaterThanOrEqual(3) // the client moved to a new connection after each graceful close
  }, 60_000)
})
