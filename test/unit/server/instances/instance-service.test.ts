import { describe, expect, it } from 'vitest'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService, liveInstanceKey } from '../../../../src/server/instances/instance-service.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const AGENT = 'spiffe://corp.example/warrant/agent/join_token/n1'
const template = {
  id: 'e1',
  spiffeId: 'spiffe://corp.example/agents/bot/{instance}',
} as unknown as RegistrationEntry

describe('InstanceService: ending an instance frees its max_instances place in the same transaction', () => {
  it('end and endAll release the live-instance records of the instance, under every prefix', async () => {
    const clock = new FakeClock()
    const ds = createMemoryDataStore({ clock })
    const svc = new InstanceService({ ds, clock, log: nullLogger })
    const a = await svc.register(AGENT, template, { pid: 10, startTime: '1' })
    const b = await svc.register(AGENT, template, { pid: 11, startTime: '2' })
    for (const r of [a, b]) {
      for (const prefix of ['/agents', '/agents/bot'])
        await ds.liveInstances.put({ prefix, instanceKey: liveInstanceKey(AGENT, r.instanceId), expiresAt: clock.now() + 60_000 })
    }
    await svc.end(AGENT, a.instanceId)
    expect((await ds.liveInstances.list('/agents/bot', clock.now())).map((l) => l.instanceKey)).toEqual([liveInstanceKey(AGENT, b.instanceId)])
    expect((await ds.liveInstances.list('/agents', clock.now())).map((l) => l.instanceKey)).toEqual([liveInstanceKey(AGENT, b.instanceId)])
    await svc.endAll(AGENT)
    expect(await ds.liveInstances.list('/agents/bot', clock.now())).toEqual([])
    expect((await svc.get(b.instanceId)).endedAt).toBe(clock.now())
  })

  it('when the release fails, the instance is not marked ended either', async () => {
    const clock = new FakeClock()
    const real = createMemoryDataStore({ clock })
    const svc0 = new InstanceService({ ds: real, clock, log: nullLogger })
    const a = await svc0.register(AGENT, template, { pid: 10, startTime: '1' })
    // A store whose live-instance release fails inside transactions.
    const failing: DataStore = {
      ...real,
      tx: (fn) => real.tx((t) => fn({ ...t, liveInstances: { ...t.liveInstances, release: () => Promise.reject(new Error('disk full')) } })),
    }
    const svc = new InstanceService({ ds: failing, clock, log: nullLogger })
    await expect(svc.end(AGENT, a.instanceId)).rejects.toThrow('disk full')
    expect((await svc0.get(a.instanceId)).endedAt).toBeNull()
  })
})
