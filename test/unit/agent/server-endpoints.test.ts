import { describe, expect, it } from 'vitest'
import { ServerEndpoints, splitTarget, type LookupAll } from '../../../src/agent/server-endpoints.js'
import { nullLogger } from '../../../src/common/log/logger.js'

function fakeDns(table: Record<string, string[]>): LookupAll & { calls: string[] } {
  const calls: string[] = []
  const f = async (host: string) => {
    calls.push(host)
    const r = table[host]
    if (!r) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
    return r
  }
  return Object.assign(f, { calls })
}

describe('ServerEndpoints', () => {
  it('keeps a single server and stays on it on failover', async () => {
    const e = new ServerEndpoints({ addresses: ['10.0.0.1:8081'], log: nullLogger, lookup: fakeDns({}) })
    await e.resolve()
    expect(e.current).toBe('10.0.0.1:8081')
    expect(await e.failover()).toBe('10.0.0.1:8081')
    expect(e.size).toBe(1)
  })

  it('moves through the configured servers in order and wraps around', async () => {
    const e = new ServerEndpoints({ addresses: ['10.0.0.1:8081', '10.0.0.2:8081', '10.0.0.3:9000'], log: nullLogger, lookup: fakeDns({}) })
    await e.resolve()
    const seen = [e.current]
    for (let i = 0; i < 4; i++) seen.push(await e.failover())
    expect(seen).toEqual(['10.0.0.1:8081', '10.0.0.2:8081', '10.0.0.3:9000', '10.0.0.1:8081', '10.0.0.2:8081'])
  })

  it('expands a DNS name into all of its addresses (IPv6 bracketed), without duplicates', async () => {
    const dns = fakeDns({ 'servers.example': ['10.0.0.1', '10.0.0.2', 'fd00::3'], 'a.example': ['10.0.0.1'] })
    const e = new ServerEndpoints({ addresses: ['a.example:8081', 'servers.example:8081'], log: nullLogger, lookup: dns })
    await e.resolve()
    expect(e.size).toBe(3)
    const seen = [e.current, await e.failover(), await e.failover()]
    expect(seen).toEqual(['10.0.0.1:8081', '10.0.0.2:8081', '[fd00::3]:8081'])
    expect(splitTarget('[fd00::3]:8081')).toEqual({ host: 'fd00::3', port: '8081' })
  })

  it('resolves the names again when the list wraps around, so a replaced server is found', async () => {
    const table: Record<string, string[]> = { 'servers.example': ['10.0.0.1', '10.0.0.2'] }
    const dns = fakeDns(table)
    const e = new ServerEndpoints({ addresses: ['servers.example:8081'], log: nullLogger, lookup: dns })
    await e.resolve()
    expect(await e.failover()).toBe('10.0.0.2:8081')
    table['servers.example'] = ['10.0.0.2', '10.0.0.9']
    expect(await e.failover()).toBe('10.0.0.2:8081') // wrapped: resolved again, first of the new list
    expect(await e.failover()).toBe('10.0.0.9:8081')
    expect(dns.calls).toEqual(['servers.example', 'servers.example'])
  })

  it('keeps a name that does not resolve (its connection fails and the agent moves on), and literal IPs without lookups', async () => {
    const dns = fakeDns({})
    const e = new ServerEndpoints({ addresses: ['gone.example:8081', '[::1]:8081', '127.0.0.1:8082'], log: nullLogger, lookup: dns })
    await e.resolve()
    expect([e.current, await e.failover(), await e.failover()]).toEqual(['gone.example:8081', '[::1]:8081', '127.0.0.1:8082'])
    expect(dns.calls).toEqual(['gone.example'])
  })

  it('stays on the current server when a resolution still lists it', async () => {
    const table: Record<string, string[]> = { 's.example': ['10.0.0.1', '10.0.0.2'] }
    const e = new ServerEndpoints({ addresses: ['s.example:1'], log: nullLogger, lookup: fakeDns(table) })
    await e.resolve()
    await e.failover()
    expect(e.current).toBe('10.0.0.2:1')
    table['s.example'] = ['10.0.0.2', '10.0.0.1']
    await e.resolve()
    expect(e.current).toBe('10.0.0.2:1')
  })

  it('refuses an empty list', () => {
    expect(() => new ServerEndpoints({ addresses: [], log: nullLogger })).toThrow(RangeError)
  })
})
