import { describe, expect, it } from 'vitest'
import { toGatewayConfig } from '../../../src/gateway/config.js'

const base = () => ({
  gateway: {
    bind_address: '127.0.0.1:9444',
    broker: { issuer: 'https://broker.example:8443' },
    bounds_document_path: 'data/bounds.jws',
    tools_dir: 'tools',
  },
  workload_api: { socket_path: '/run/agent.sock' },
})

function issuesOf(raw: unknown): string[] {
  try {
    toGatewayConfig(raw, '/etc/warrant')
  } catch (err) {
    return (err as { details: { issues: { path: string }[] } }).details.issues.map((i) => i.path)
  }
  throw new Error('did not throw')
}

describe('gateway config', () => {
  it('resolves paths against the config directory and applies defaults', () => {
    const c = toGatewayConfig(base(), '/etc/warrant')
    expect(c).toMatchObject({
      bindAddress: { host: '127.0.0.1', port: 9444 },
      url: 'https://127.0.0.1:9444',
      broker: { issuer: 'https://broker.example:8443', caFile: undefined },
      boundsDocumentPath: '/etc/warrant/data/bounds.jws',
      toolsDir: '/etc/warrant/tools',
      txnTokenCache: false,
      allowBearer: false,
      workloadApiSocket: '/run/agent.sock',
      audit: { path: '/etc/warrant/.warrant/gateway/gateway-audit.sqlite3', checkpointIntervalMs: 60_000, keyManager: undefined },
    })
  })

  it('reports every issue with its path', () => {
    const raw = base() as Record<string, Record<string, unknown>>
    raw['gateway']!['broker'] = { issuer: 'http://broker' }
    raw['gateway']!['url'] = 'https://gw.example/path'
    raw['gateway']!['unknown'] = 1
    expect(issuesOf(raw)).toEqual(['gateway'])
    delete raw['gateway']!['unknown']
    expect(issuesOf(raw)).toEqual(['gateway.broker.issuer', 'gateway.url'])
    expect(issuesOf({ gateway: {} })).toEqual(expect.arrayContaining(['gateway.broker', 'gateway.bounds_document_path', 'gateway.tools_dir', 'workload_api']))
  })
})
