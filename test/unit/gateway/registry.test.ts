import { describe, expect, it } from 'vitest'
import { parseToolDocument, routeOf, ToolRegistry } from '../../../src/gateway/registry.js'

const doc = (over: Record<string, unknown> = {}, tool: Record<string, unknown> = {}) =>
  JSON.stringify({
    client_id: 'https://tools.example/search',
    client_name: 'Search',
    redirect_uris: [],
    ...over,
    warrant_tool: {
      name: 'search',
      endpoint: 'https://search.internal:9443/api/',
      audience: 'https://search.example/',
      scopes: ['search:read'],
      allowed_agents: ['spiffe://example.org/agents/', 'spiffe://example.org/ops/one'],
      ...tool,
    },
  })

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn()
  } catch (err) {
    return (err as { details: { issues: { path: string; message: string }[] } }).details.issues
  }
  throw new Error('did not throw')
}

describe('tool registry', () => {
  it('parses a Client ID Metadata Document with a warrant_tool member (other client metadata allowed)', () => {
    const t = parseToolDocument('/tools/search.json', doc())
    expect(t).toMatchObject({
      name: 'search',
      clientId: 'https://tools.example/search',
      clientName: 'Search',
      endpoint: 'https://search.internal:9443/api',
      audience: 'https://search.example/',
      scopes: ['search:read'],
      allowedAgents: ['spiffe://example.org/agents/', 'spiffe://example.org/ops/one'],
      source: '/tools/search.json',
    })
  })

  it('refuses a bad document with its path and every issue', () => {
    const issues = issuesOf(() =>
      parseToolDocument('/t/bad.json', doc({ client_id: 'http://tools.example/x' }, { endpoint: 'http://x', scopes: [], allowed_agents: ['https://x/'] })),
    )
    const paths = issues.map((i) => i.path)
    expect(paths).toContain('/t/bad.json: client_id')
    expect(paths).toContain('/t/bad.json: warrant_tool.endpoint')
    expect(paths).toContain('/t/bad.json: warrant_tool.scopes')
    expect(paths).toContain('/t/bad.json: warrant_tool.allowed_agents.0')
  })

  it('refuses unknown warrant_tool members, missing members, bad names, endpoints with a query, prefixes without a path, and non-JSON', () => {
    expect(issuesOf(() => parseToolDocument('a.json', doc({}, { extra: 1 })))[0]!.path).toBe('a.json: warrant_tool')
    expect(issuesOf(() => parseToolDocument('a.json', JSON.stringify({ client_id: 'https://x/', client_name: 'x' })))[0]!.path).toBe('a.json: warrant_tool')
    expect(issuesOf(() => parseToolDocument('a.json', doc({}, { name: '../x' })))[0]!.path).toBe('a.json: warrant_tool.name')
    expect(issuesOf(() => parseToolDocument('a.json', doc({}, { endpoint: 'https://x/?a=1' })))[0]!.path).toBe('a.json: warrant_tool.endpoint')
    expect(issuesOf(() => parseToolDocument('a.json', doc({}, { allowed_agents: ['spiffe://example.org/'] })))[0]!.path).toBe(
      'a.json: warrant_tool.allowed_agents.0',
    )
    expect(issuesOf(() => parseToolDocument('a.json', '{nope'))[0]!.path).toBe('a.json')
  })

  it('a registry refuses a duplicate name and any bad document, naming each file', () => {
    const issues = issuesOf(() =>
      ToolRegistry.fromDocuments([
        { source: 'one.json', text: doc() },
        { source: 'two.json', text: doc() },
        { source: 'three.json', text: '[]' },
      ]),
    )
    expect(issues.map((i) => i.path)).toEqual(['two.json: warrant_tool.name', 'three.json: (root)'])
    const ok = ToolRegistry.fromDocuments([{ source: 'one.json', text: doc() }])
    expect(ok.get('search')?.name).toBe('search')
    expect(ok.get('other')).toBeUndefined()
    expect(ok.names()).toEqual(['search'])
  })

  it('routes /tools/<name>/<rest> and refuses dot segments', () => {
    expect(routeOf('/tools/search/q?x=1')).toEqual({ name: 'search', rest: '/q?x=1' })
    expect(routeOf('/tools/search')).toEqual({ name: 'search', rest: '/' })
    expect(routeOf('/tools/search?x=1')).toEqual({ name: 'search', rest: '/?x=1' })
    expect(routeOf('/other/search')).toBeUndefined()
    expect(routeOf('/tools/')).toBeUndefined()
    expect(routeOf('/tools/search/../admin')).toBeUndefined()
    expect(routeOf('/tools/search/a/%2E%2e/admin')).toBeUndefined()
    expect(routeOf('/tools/search/./x')).toBeUndefined()
    expect(routeOf('/tools/search/..x/y')).toEqual({ name: 'search', rest: '/..x/y' })
  })
})
