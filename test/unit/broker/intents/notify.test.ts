import net from 'node:net'
import { describe, expect, it } from 'vitest'
import type { ApprovalView } from '../../../../src/broker/intents/contract.js'
import { ApprovalNotifier, consoleLink, emailMessage, webhookPayload } from '../../../../src/broker/intents/notify.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

const view: ApprovalView = {
  id: 'int-1',
  action: 'api:execute',
  resource: 'https://grid.example/control/<breaker>&reset',
  paramsDigest: 'A'.repeat(43),
  declaredRisk: 0.85,
  risk: 0.9,
  factors: [{ rule: 'action:api:*', weight: 0.3, detail: 'action <b>api</b>' }],
  status: 'pending',
  decidedBy: 'threshold:0.5',
  approverGroup: 'ops',
  custody: { agentId: 'spiffe://corp.example/agents/a', taskId: 't1', delegation: ['spiffe://corp.example/agents/a'] },
  createdAt: 1_800_000_000,
  expiresAt: 1_800_000_600,
  bindingMessage: 'reset breaker 7',
}

describe('approval notifications', () => {
  it('a Slack-compatible payload: text, blocks, escaped mrkdwn, a console button; never the parameters', () => {
    const p = webhookPayload(view, consoleLink('https://console.example/a/{id}', view.id))
    expect(p.text).toContain('spiffe://corp.example/agents/a wants api:execute')
    const json = JSON.stringify(p.blocks)
    expect(json).toContain('&lt;breaker&gt;&amp;reset')
    expect(json).not.toContain('<b>')
    expect(json).toContain('"url":"https://console.example/a/int-1"')
    expect(json).toContain('reset breaker 7')
    expect(consoleLink('https://console.example/', 'x')).toBe('https://console.example/')
    expect(consoleLink(undefined, 'x')).toBeUndefined()
    const m = emailMessage(view, undefined)
    expect(m.subject).toBe('[warrant] Approval needed: api:execute on https://grid.example/control/<breaker>&reset')
    expect(m.text).toContain('warrant approval list')
  })

  it('a webhook that fails is logged without its path and does not block', async () => {
    const s = net.createServer()
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
    const port = (s.address() as net.AddressInfo).port
    await new Promise<void>((r) => s.close(() => r()))
    const log = captureLogger()
    const n = new ApprovalNotifier({ groups: { ops: { webhookUrl: `http://127.0.0.1:${port}/services/SECRET/PATH`, email: [] } }, log, timeoutMs: 2000 })
    n.notify(view)
    await n.idle()
    expect(n.stats).toEqual({ webhooks: 0, emails: 0, failures: 1 })
    const text = JSON.stringify(log.lines)
    expect(text).toContain('Approval webhook failed')
    expect(text).not.toContain('SECRET')
    n.notify({ ...view, approverGroup: 'nobody' })
    await n.idle()
    expect(n.stats.failures).toBe(1)
    n.close()
  })
})
