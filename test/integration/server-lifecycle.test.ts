/**
 * Lifecycle of a real `warrant server run` process: SIGTERM is a clean exit
 * with a consistent database; SIGKILL while entries are being created loses
 * no acknowledged entry, and the CA (keys, journal) survives the restart.
 */
import Database from 'better-sqlite3'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { X509Bundle } from '../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { verifyX509Svid } from '../../src/spiffe/x509-svid/verify.js'
import { ServerProcess } from '../helpers/server-process.js'
import { TestAgentClient } from '../helpers/test-agent-client.js'

const TD = 'example.org'
const td = TrustDomain.fromString(TD)

function integrityCheck(path: string): string {
  const db = new Database(path, { fileMustExist: true })
  try {
    return (db.pragma('integrity_check', { simple: true }) as string) ?? ''
  } finally {
    db.close()
  }
}

const authorities = (pem: string) => X509Bundle.parsePem(td, pem).authorities.map((d) => Buffer.from(d).toString('base64'))

describe('warrant server process lifecycle', () => {
  let srv: ServerProcess | undefined
  afterEach(async () => {
    await srv?.dispose()
    srv = undefined
  })

  it('exits 0 on SIGTERM, removes its socket, and leaves a database that passes integrity_check', async () => {
    srv = await ServerProcess.start()
    const created = await srv.cliJson<{ results: { status: { code: number } }[] }>([
      'entry',
      'create',
      '--spiffe-id',
      `spiffe://${TD}/term`,
      '--parent-id',
      `spiffe://${TD}/warrant/server`,
      '--selector',
      'unix:uid:1',
    ])
    expect(created.results[0]!.status.code).toBe(0)
    const exit = await srv.stop()
    expect(exit).toEqual({ code: 0, signal: null })
    expect(readdirSync(join(srv.dataDir, 'private'))).not.toContain('admin.sock')
    expect(integrityCheck(join(srv.dataDir, 'datastore.sqlite3'))).toBe('ok')
  })

  it('keeps every acknowledged entry and the CA across SIGKILL and restart', async () => {
    srv = await ServerProcess.start()
    const bundleBefore = srv.bundlePem()
    const keysBefore = readdirSync(join(srv.dataDir, 'keys')).sort()
    const admin = adminClient('Entries', srv.socketPath)
    const acked: string[] = []
    let killed = false
    const KILL_AFTER = 40
    try {
      // One entry per call, as fast as the server answers; the id is recorded only once acknowledged.
      const writer = (async () => {
        for (let i = 0; i < 100_000; i++) {
          try {
            const r = await admin.call<{ results: { status: { code: number; message: string }; entry: { id: string } | null }[] }>(
              'BatchCreate',
              {
                entries: [
                  {
                    spiffe_id: `spiffe://${TD}/crash/w${i}`,
                    parent_id: `spiffe://${TD}/warrant/server`,
                    selectors: [{ type: 'unix', value: `uid:${i}` }],
                    dns_names: [`w${i}.example`],
                  },
                ],
              },
              5000,
            )
            const res = r.results[0]!
            if (res.status.code !== 0) throw new Error(res.status.message)
            acked.push(res.entry!.id)
          } catch (err) {
            if (killed) return
            throw err
          }
        }
      })()
      // Kill while writes are in flight (the writer keeps issuing calls).
      while (acked.length < KILL_AFTER) await new Promise((r) => setTimeout(r, 5))
      killed = true
      const exit = await srv.kill()
      expect(exit.signal).toBe('SIGKILL')
      await writer
    } finally {
      admin.close()
    }
    expect(acked.length).toBeGreaterThanOrEqual(KILL_AFTER)
    expect(integrityCheck(join(srv.dataDir, 'datastore.sqlite3'))).toBe('ok')

    await srv.spawn()
    const check = adminClient('Entries', srv.socketPath)
    try {
      const missing: string[] = []
      for (const id of acked) {
        try {
          await check.call('Get', { id })
        } catch {
          missing.push(id)
        }
      }
      expect(missing).toEqual([])
      const n = Number((await check.call<{ count: string }>('Count', {})).count)
      expect(n).toBeGreaterThanOrEqual(acked.length)
    } finally {
      check.close()
    }

    // The CA came back from its keys and journal: same X.509 authorities, same keys.
    expect(authorities(srv.bundlePem())).toEqual(authorities(bundleBefore))
    expect(readdirSync(join(srv.dataDir, 'keys')).sort()).toEqual(keysBefore)
    // and the restarted server issues SVIDs that chain to the bundle published before the crash
    const token = (await srv.cliJson<{ token: string }>(['token', 'generate'])).token
    const c = new TestAgentClient({ address: srv.address, bundlePem: bundleBefore, trustDomain: TD })
    try {
      const cred = await c.attestJoinToken(token)
      expect((await verifyX509Svid(cred.chain, X509Bundle.parsePem(td, bundleBefore))).id.toString()).toBe(cred.agentId)
    } finally {
      c.close()
    }

    expect(await srv.stop()).toEqual({ code: 0, signal: null })
    expect(integrityCheck(join(srv.dataDir, 'datastore.sqlite3'))).toBe('ok')
  })
})
