import { statSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerAdminServer, type BrokerAdminServer } from '../../src/broker/admin/admin-server.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { warrant } from '../helpers/e2e-cluster.js'
import { fakeService } from '../helpers/broker-http-fixtures.js'
import { tempDir } from '../helpers/temp.js'

/** The broker's admin API on its Unix socket, driven by the `warrant task` CLI as a separate process. */

const svc = fakeService()
const tmp = tempDir('wba-')
let admin: BrokerAdminServer
let socket: string

beforeAll(async () => {
  socket = join(tmp.dir, 'private', 'broker-admin.sock')
  admin = await startBrokerAdminServer({ service: svc, socketPath: socket, log: captureLogger() })
})
afterAll(async () => {
  await admin?.close()
  tmp.cleanup()
})

describe('broker admin API and warrant task', () => {
  it('listens on a 0600 socket in a 0700 directory', () => {
    expect(statSync(socket).mode & 0o777).toBe(0o600)
    expect(statSync(join(tmp.dir, 'private')).mode & 0o777).toBe(0o700)
  })

  it('creates, shows, lists and ends a task as admin', async () => {
    const c = await warrant([
      'task',
      'create',
      '--socket',
      socket,
      '--agent',
      'spiffe://example.org/agents/',
      '--scope',
      'repo:read',
      '--scope',
      'repo:write',
      '--resource',
      'https://git.example/',
      '--ttl',
      '2h',
      '--max-renewals',
      '5',
      '--task-id',
      'deploy-1',
      '--orchestration-id',
      'o-1',
      '--output',
      'json',
    ])
    expect(c.stderr).toBe('')
    expect(c.code).toBe(0)
    expect(JSON.parse(c.stdout)).toMatchObject({
      task_id: 'deploy-1',
      orchestration_id: 'o-1',
      agent: 'spiffe://example.org/agents/',
      scopes: ['repo:read', 'repo:write'],
      resources: ['https://git.example/'],
      ttl_seconds: 7200,
      max_renewals: 5,
      created_by: 'admin',
      state: 'active',
    })
    expect(svc.calls.find((x) => x.method === 'createTask')!.args[1]).toBe('admin')

    const show = await warrant(['task', 'show', 'deploy-1', '--socket', socket])
    expect(show.code).toBe(0)
    // Task times are seconds on the wire; the CLI shows the real dates.
    expect(show.stdout).toMatch(new RegExp(`Expires: +${new Date().getUTCFullYear()}-`))
    expect(show.stdout).toContain('deploy-1 (active)')

    const list = await warrant(['task', 'list', '--socket', socket, '--output', 'json'])
    expect(JSON.parse(list.stdout).tasks.map((t: { task_id: string }) => t.task_id)).toEqual(['deploy-1'])

    const end = await warrant(['task', 'end', 'deploy-1', '--socket', socket, '--output', 'json'])
    expect(JSON.parse(end.stdout).state).toBe('ended')
    const again = await warrant(['task', 'end', 'deploy-1', '--socket', socket])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain('[ERR_TASK_ENDED]')
  }, 60_000)

  it('reports refusals with their code and changes nothing', async () => {
    const n = svc.calls.filter((c) => c.method === 'createTask').length
    const bad = await warrant(['task', 'create', '--socket', socket, '--agent', 'spiffe://example.org/a', '--scope', 'x', '--ttl', '0'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('[ERR_TASK_INVALID]')
    expect(svc.calls.filter((c) => c.method === 'createTask').length).toBe(n)
    const missing = await warrant(['task', 'show', 'nope', '--socket', socket])
    expect(missing.stderr).toContain('[ERR_TASK_NOT_FOUND]')
    const down = await warrant(['task', 'list', '--socket', join(tmp.dir, 'none.sock')])
    expect(down.code).toBe(1)
    expect(down.stderr).toContain('[ERR_UNAVAILABLE]')
  }, 60_000)
})
