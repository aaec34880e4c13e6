import { describe, expect, it } from 'vitest'
import { agentResponseHeaders, toolRequestHeaders } from '../../../src/gateway/headers.js'

describe('gateway headers', () => {
  it("strips the agent's credentials, its own Txn-Token, Host and every hop-by-hop header; adds the gateway's Txn-Token", () => {
    const out = toolRequestHeaders(
      {
        authorization: 'DPoP abc',
        dpop: 'proof',
        'txn-token': 'forged',
        host: 'gateway:8444',
        connection: 'keep-alive, x-private',
        'x-private': 'hop',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic x',
        te: 'trailers',
        trailer: 'x',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        'txn-purpose': 'audit',
        forwarded: 'for=evil',
        'content-type': 'application/json',
        'x-request-id': 'r1',
      },
      { txnToken: 'the-txn-token', host: 'tool:9443', forwardedFor: '127.0.0.1' },
    )
    expect(out).toEqual({
      'content-type': 'application/json',
      'x-request-id': 'r1',
      host: 'tool:9443',
      'txn-token': 'the-txn-token',
      forwarded: 'for="127.0.0.1"',
    })
  })

  it("never passes a tool's Txn-Token (or hop-by-hop headers) back to the agent", () => {
    const out = agentResponseHeaders({
      'txn-token': 'leak',
      connection: 'close',
      'transfer-encoding': 'chunked',
      'content-type': 'application/json',
      'x-a': '1',
    })
    expect(out).toEqual({ 'content-type': 'application/json', 'x-a': '1' })
  })

  it('injects a shielded credential under its header, replacing any value the agent sent (case-insensitively)', () => {
    const out = toolRequestHeaders(
      { 'x-api-key': 'agent-chosen', 'x-a': '1' },
      { txnToken: 't', host: 'tool', credential: { header: 'X-Api-Key', value: 'real' } },
    )
    expect(out['x-api-key']).toBe('real')
    expect(out['X-Api-Key']).toBeUndefined()
    expect(out['x-a']).toBe('1')
    expect(toolRequestHeaders({ 'x-api-key': 'agent' }, { txnToken: 't', host: 'tool' })['x-api-key']).toBe('agent')
  })
})
