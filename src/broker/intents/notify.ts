/**
 * Reaching approvers when an intent waits for a human: a Slack-compatible
 * webhook (`{"text", "blocks"}`, a button linking to the console) and an email
 * through the configured SMTP relay (nodemailer), per approver group. Never
 * blocking: each notice is sent in the background, a failure is logged (never
 * the relay password or the webhook's URL path, which is its secret) and
 * counted, and the intent waits all the same.
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import nodemailer, { type Transporter } from 'nodemailer'
import { F, type Logger } from '../../common/log/logger.js'
import type { ApproverGroupConfig, SmtpConfig } from './config.js'
import type { ApprovalView } from './contract.js'

export interface NotifierOptions {
  readonly groups: Readonly<Record<string, ApproverGroupConfig>>
  readonly smtp?: SmtpConfig
  /** The console URL; `{id}` is replaced by the intent's id. */
  readonly consoleUrl?: string
  readonly log: Logger
  /** Per request (webhook POST, SMTP session). Default 10 s. */
  readonly timeoutMs?: number
}

/** Escapes text for Slack's mrkdwn (`&`, `<`, `>` only: nothing else is markup there). */
function slack(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** The console link of an intent, or undefined without a console URL. */
export function consoleLink(consoleUrl: string | undefined, id: string): string | undefined {
  if (consoleUrl === undefined) return undefined
  return consoleUrl.includes('{id}') ? consoleUrl.replaceAll('{id}', encodeURIComponent(id)) : consoleUrl
}

const pct = (n: number) => `${Math.round(n * 100)}%`

/** The webhook's JSON body (Slack Block Kit; other chat tools read `text`). */
export function webhookPayload(v: ApprovalView, link: string | undefined): { text: string; blocks: unknown[] } {
  const text = `Approval needed: ${v.custody.agentId} wants ${v.action} on ${v.resource} (risk ${pct(v.risk)}, intent ${v.id})`
  const factors = v.factors.map((f) => `• \`${slack(f.rule)}\` ${f.weight >= 0 ? '+' : ''}${f.weight} ${slack(f.detail)}`).join('\n')
  const blocks: unknown[] = [
    { type: 'header', text: { type: 'plain_text', text: 'Approval needed', emoji: false } },
    {
      type: 'section',
      text: {
        type: 'mrkdwn',
        text: `*${slack(v.custody.agentId)}* wants \`${slack(v.action)}\` on \`${slack(v.resource)}\`\n*Risk* ${pct(v.risk)} (${slack(v.decidedBy ?? '')})`,
      },
      fields: [
        { type: 'mrkdwn', text: `*Intent*\n${slack(v.id)}` },
        { type: 'mrkdwn', text: `*Task*\n${slack(v.custody.taskId ?? '-')}` },
        { type: 'mrkdwn', text: `*Node*\n${slack(v.custody.nodeAttestation ?? 'unknown')}` },
        { type: 'mrkdwn', text: `*Expires*\n${new Date(v.expiresAt * 1000).toISOString()}` },
      ],
    },
    ...(v.bindingMessage !== undefined ? [{ type: 'context', elements: [{ type: 'plain_text', text: `Agent says: ${v.bindingMessage}`, emoji: false }] }] : []),
    ...(factors !== '' ? [{ type: 'section', text: { type: 'mrkdwn', text: factors.slice(0, 2900) } }] : []),
    ...(link !== undefined
      ? [{ type: 'actions', elements: [{ type: 'button', text: { type: 'plain_text', text: 'Review in the console' }, url: link, style: 'primary' }] }]
      : []),
  ]
  return { text, blocks }
}

/** The email's subject and plain-text body. */
export function emailMessage(v: ApprovalView, link: string | undefined): { subject: string; text: string } {
  const lines = [
    `${v.custody.agentId} declared an intent that needs a human decision.`,
    '',
    `Action:    ${v.action}`,
    `Resource:  ${v.resource}`,
    `Risk:      ${pct(v.risk)} (${v.decidedBy ?? ''})`,
    `Intent:    ${v.id}`,
    `Task:      ${v.custody.taskId ?? '-'}`,
    `Node:      ${v.custody.nodeAttestation ?? 'unknown'}`,
    `Params:    sha-256 ${v.paramsDigest}`,
    `Expires:   ${new Date(v.expiresAt * 1000).toISOString()}`,
    ...(v.bindingMessage !== undefined ? [`Agent says: ${v.bindingMessage}`] : []),
    '',
    'Risk factors:',
    ...v.factors.map((f) => `  ${f.rule}  ${f.weight >= 0 ? '+' : ''}${f.weight}  ${f.detail}`),
    '',
    link !== undefined ? `Review it in the console: ${link}` : 'Review it with: warrant approval list',
  ]
  return { subject: `[warrant] Approval needed: ${v.action} on ${v.resource}`.slice(0, 200), text: lines.join('\n') }
}

/** Where a webhook goes, for the log: its origin only (the path of a Slack webhook is its secret). */
const originOf = (url: string): string => {
  try {
    return new URL(url).origin
  } catch {
    return 'invalid'
  }
}

export class ApprovalNotifier {
  readonly #o: NotifierOptions
  readonly #mail: Transporter | undefined
  readonly #cas = new Map<string, string>()
  /** Notices sent and failed (for tests and the log). */
  readonly stats = { webhooks: 0, emails: 0, failures: 0 }
  readonly #inflight = new Set<Promise<void>>()

  constructor(o: NotifierOptions) {
    this.#o = o
    const s = o.smtp
    if (s) {
      this.#mail = nodemailer.createTransport({
        host: s.host,
        port: s.port,
        secure: s.secure,
        requireTLS: s.requireTls,
        connectionTimeout: o.timeoutMs ?? 10_000,
        greetingTimeout: o.timeoutMs ?? 10_000,
        socketTimeout: o.timeoutMs ?? 10_000,
        ...(s.user !== undefined ? { auth: { user: s.user, pass: readFileSync(s.passwordFile!, 'utf8').trim() } } : {}),
        ...(s.caFile !== undefined ? { tls: { ca: readFileSync(s.caFile, 'utf8') } } : {}),
      })
    }
  }

  /** Sends the notices of an intent that waits for `v.approverGroup` (in the background; see `idle`). */
  notify(v: ApprovalView): void {
    const group = v.approverGroup !== undefined ? this.#o.groups[v.approverGroup] : undefined
    const log = this.#o.log.child({ intent_id: v.id, group: v.approverGroup })
    if (!group || (group.webhookUrl === undefined && group.email.length === 0)) {
      log.info({}, 'No notification configured for the approver group')
      return
    }
    const link = consoleLink(this.#o.consoleUrl, v.id)
    if (group.webhookUrl !== undefined) this.#track(this.#webhook(group, v, link, log))
    if (group.email.length > 0 && this.#mail) this.#track(this.#email(group.email, v, link, log))
  }

  /** Resolves once every notice in flight has been sent or has failed. */
  async idle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
  }

  close(): void {
    this.#mail?.close()
  }

  #track(p: Promise<void>): void {
    this.#inflight.add(p)
    void p.finally(() => this.#inflight.delete(p))
  }

  async #webhook(g: ApproverGroupConfig, v: ApprovalView, link: string | undefined, log: Logger): Promise<void> {
    const url = g.webhookUrl!
    try {
      let ca: string | undefined
      if (g.webhookCaFile !== undefined) {
        ca = this.#cas.get(g.webhookCaFile)
        if (ca === undefined) this.#cas.set(g.webhookCaFile, (ca = readFileSync(g.webhookCaFile, 'utf8')))
      }
      const status = await postJson(url, webhookPayload(v, link), { timeoutMs: this.#o.timeoutMs ?? 10_000, ...(ca !== undefined ? { ca } : {}) })
      if (status < 200 || status >= 300) throw new Error(`answered ${status}`)
      this.stats.webhooks++
      log.info({ webhook: originOf(url) }, 'Approvers notified by webhook')
    } catch (err) {
      this.stats.failures++
      log.warn({ webhook: originOf(url), [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Approval webhook failed; the intent waits all the same')
    }
  }

  async #email(to: readonly string[], v: ApprovalView, link: string | undefined, log: Logger): Promise<void> {
    try {
      const m = emailMessage(v, link)
      await this.#mail!.sendMail({ from: this.#o.smtp!.from, to: [...to], subject: m.subject, text: m.text })
      this.stats.emails++
      log.info({ [F.COUNT]: to.length }, 'Approvers notified by email')
    } catch (err) {
      this.stats.failures++
      log.warn({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Approval email failed; the intent waits all the same')
    }
  }
}

/** POSTs JSON; resolves with the status (the body is read and dropped). */
function postJson(url: string, body: unknown, o: { timeoutMs: number; ca?: string }): Promise<number> {
  const u = new URL(url)
  const data = JSON.stringify(body)
  const mod = u.protocol === 'https:' ? https : http
  return new Promise((resolve, reject) => {
    const req = mod.request(
      u,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
        timeout: o.timeoutMs,
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        agent: false,
      },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end(data)
  })
}
