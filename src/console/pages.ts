/**
 * The console's pages, rendered on the server through `html` (escaped by
 * construction). Every form that changes something carries the session's
 * CSRF token; nothing rendered is a secret (tokens by `jti` only).
 */
import { html, type Html, type HtmlValue } from './html.js'
import type { ApprovalView, AuditEntryView, AuditStatus, LiveInstance, LiveToken, RateBucket, RevocationView, SignalView } from './ports.js'
import { chainGraph, rateChart, riskBars } from './svg.js'

export interface PageContext {
  readonly operator?: string
  readonly method?: string
  readonly csrf: string
  /** The current path, to mark the navigation link. */
  readonly path: string
  readonly notice?: { text: string; error?: boolean }
}

const NAV: readonly [string, string][] = [
  ['/', 'Overview'],
  ['/approvals', 'Approvals'],
  ['/instances', 'Instances'],
  ['/revocations', 'Revocations'],
  ['/audit', 'Audit log'],
  ['/signals', 'Signals'],
]

const time = (epochSec: number) => new Date(epochSec * 1000).toISOString().replace('.000Z', 'Z')

function csrfField(ctx: PageContext): Html {
  return html`<input type="hidden" name="_csrf" value="${ctx.csrf}" />`
}

export function layout(ctx: PageContext, title: string, body: HtmlValue): Html {
  const nav = ctx.operator
    ? html`<nav aria-label="Main">
          <ul>
            ${NAV.map(([href, label]) => html`<li><a href="${href}" ${ctx.path === href ? html`aria-current="page"` : undefined}>${label}</a></li>`)}
          </ul>
        </nav>
        <div class="who">
          <span>Signed in as <strong>${ctx.operator}</strong> <span class="muted">(${ctx.method})</span></span>
          <form method="post" action="/logout">${csrfField(ctx)}<button type="submit">Sign out</button></form>
        </div>`
    : undefined
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="csrf-token" content="${ctx.csrf}" />
        <meta name="referrer" content="same-origin" />
        <title>${title} · warrant console</title>
        <link rel="stylesheet" href="/static/console.css" />
        <script src="/static/console.js" defer></script>
      </head>
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header><span class="brand">warrant console</span>${nav}</header>
        <main id="main">
          <h1>${title}</h1>
          ${ctx.notice ? html`<p class="notice ${ctx.notice.error ? 'error' : ''}" role="status">${ctx.notice.text}</p>` : undefined} ${body}
        </main>
      </body>
    </html>`
}

export function loginPage(ctx: PageContext, o: { bootstrapOpen: boolean }): Html {
  return layout(
    ctx,
    'Sign in',
    html`<section class="card" aria-labelledby="pk">
        <h2 id="pk">With a passkey</h2>
        <p>Use the passkey you registered for this console.</p>
        <button type="button" id="passkey-login">Sign in with a passkey</button>
        <p id="status" role="status" aria-live="polite"></p>
      </section>
      <section class="card" aria-labelledby="totp">
        <h2 id="totp">With a one-time code (TOTP)</h2>
        <form method="post" action="/login/totp">
          ${csrfField(ctx)}
          <label for="operator">Operator</label>
          <input id="operator" name="operator" autocomplete="username" required maxlength="64" />
          <label for="code">Code from your authenticator app</label>
          <input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required maxlength="6" />
          <p><button type="submit">Sign in</button></p>
        </form>
      </section>
      ${
        o.bootstrapOpen
          ? html`<section class="card" aria-labelledby="boot">
              <h2 id="boot">First sign-in</h2>
              <p>Paste the one-time bootstrap token the broker printed at start, then set up a passkey or a TOTP secret.</p>
              <form method="post" action="/bootstrap">
                ${csrfField(ctx)}
                <label for="token">Bootstrap token</label>
                <input id="token" name="token" type="password" autocomplete="off" required maxlength="128" />
                <p><button type="submit">Continue</button></p>
              </form>
            </section>`
          : undefined
      }`,
  )
}

export function setupPage(ctx: PageContext, o: { operator: string; totp?: { secret: string; uri: string } }): Html {
  return layout(
    ctx,
    `Set up a credential for ${o.operator}`,
    html`<p>This setup session can only register a credential. Afterwards, sign in with it.</p>
      <section class="card" aria-labelledby="pk">
        <h2 id="pk">Register a passkey</h2>
        <button type="button" id="passkey-register">Register a passkey</button>
        <p id="status" role="status" aria-live="polite"></p>
      </section>
      <section class="card" aria-labelledby="totp">
        <h2 id="totp">Or use TOTP</h2>
        ${
          o.totp
            ? html`<p>Add this secret to your authenticator app now: it is shown only once.</p>
                <p><code>${o.totp.secret}</code></p>
                <p class="muted mono">${o.totp.uri}</p>
                <form method="post" action="/setup/totp/confirm">
                  ${csrfField(ctx)}
                  <label for="code">First code from the app</label>
                  <input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required maxlength="6" />
                  <p><button type="submit">Confirm</button></p>
                </form>`
            : html`<form method="post" action="/setup/totp">${csrfField(ctx)}<button type="submit" class="secondary">Show a new TOTP secret</button></form>`
        }
      </section>`,
  )
}

function custodyNodes(a: ApprovalView): { id: string; label: string }[] {
  const c = a.custody
  const nodes: { id: string; label: string }[] = []
  if (c.nodeAttestation) nodes.push({ id: c.nodeAttestation, label: 'node attestation' })
  for (const d of c.delegation) nodes.push({ id: d, label: 'delegated by' })
  nodes.push({ id: c.agentId, label: c.instanceId ? `agent · instance ${c.instanceId}` : 'agent' })
  if (c.taskId) nodes.push({ id: c.taskId, label: 'task' })
  return nodes
}

function decisionForms(ctx: PageContext, a: ApprovalView): Html {
  const rid = `reason-${a.id}`
  return html`<form method="post" action="/approvals/${encodeURIComponent(a.id)}/decide" class="inline">
    ${csrfField(ctx)}
    <div><label for="${rid}">Reason</label><input id="${rid}" name="reason" maxlength="500" /></div>
    <button type="submit" name="decision" value="approve">Approve</button>
    <button type="submit" name="decision" value="deny" class="danger">Deny</button>
  </form>`
}

export function approvalsPage(ctx: PageContext, o: { configured: boolean; pending: readonly ApprovalView[]; recent: readonly ApprovalView[] }): Html {
  if (!o.configured) return layout(ctx, 'Approvals', html`<p class="notice">Approvals are not configured on this broker ([broker.intents]).</p>`)
  const card = (a: ApprovalView, decide: boolean) => approvalCard(ctx, a, decide)
  return layout(
    ctx,
    'Approvals',
    html`<h2>Waiting for a decision (${o.pending.length})</h2>
      ${o.pending.length === 0 ? html`<p>No intent is waiting.</p>` : o.pending.map((a) => card(a, true))}
      <h2>Recently decided</h2>
      ${
        o.recent.length === 0
          ? html`<p>None.</p>`
          : html`<table>
              <caption class="muted">
                Most recent first
              </caption>
              <thead>
                <tr>
                  <th scope="col">Intent</th>
                  <th scope="col">Action</th>
                  <th scope="col">Resource</th>
                  <th scope="col">Risk</th>
                  <th scope="col">Status</th>
                  <th scope="col">By</th>
                </tr>
              </thead>
              <tbody>
                ${o.recent.map(
                  (a) =>
                    html`<tr>
                      <td><code>${a.id}</code></td>
                      <td><code>${a.action}</code></td>
                      <td><code>${a.resource}</code></td>
                      <td>${a.risk.toFixed(2)}</td>
                      <td>${a.status}</td>
                      <td>${a.approver ? `${a.approver.id} (${a.approver.method})` : (a.decidedBy ?? '')}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }`,
  )
}

function approvalCard(ctx: PageContext, a: ApprovalView, decide: boolean): Html {
  return html`<article class="card" aria-labelledby="i-${a.id}">
    <h2 id="i-${a.id}"><code>${a.action}</code> on <code>${a.resource}</code></h2>
    <p>
      Intent <code>${a.id}</code> · status <span class="badge ${a.status === 'approved' ? 'ok' : a.status === 'pending' ? 'warn' : 'bad'}">${a.status}</span> ·
      risk <strong>${a.risk.toFixed(2)}</strong>${a.declaredRisk !== undefined ? html` (declared ${a.declaredRisk.toFixed(2)})` : undefined}
      ${a.approverGroup ? html`· group <code>${a.approverGroup}</code>` : undefined} · expires ${time(a.expiresAt)}
    </p>
    ${a.bindingMessage ? html`<p>Message from the agent: <q>${a.bindingMessage}</q></p>` : undefined}
    <p class="muted">
      Parameters digest <code>${a.paramsDigest}</code>${a.decidedBy ? html` · routed by rule <code>${a.decidedBy}</code>` : undefined}${
        a.tokenId ? html` · token <code>${a.tokenId}</code>` : undefined
      }
    </p>
    ${a.approver ? html`<p>Decided by <strong>${a.approver.id}</strong> (${a.approver.method})${a.reason ? html`: ${a.reason}` : undefined}</p>` : undefined}
    <h3>Risk breakdown</h3>
    <div class="scroll">${riskBars(a.factors, a.risk, `Risk of intent ${a.id}`)}</div>
    <h3>Chain of custody</h3>
    <div class="scroll">${chainGraph(custodyNodes(a), `Chain of custody of intent ${a.id}`)}</div>
    ${decide ? decisionForms(ctx, a) : undefined}
  </article>`
}

/** One intent (the link notifications carry: `[broker.intents] console_url = "https://.../approvals/{id}"`). */
export function approvalPage(ctx: PageContext, a: ApprovalView | undefined): Html {
  if (!a)
    return layout(
      ctx,
      'Intent',
      html`<p>No such intent.</p>
        <p><a href="/approvals">All approvals</a></p>`,
    )
  return layout(
    ctx,
    `Intent ${a.id}`,
    html`${approvalCard(ctx, a, a.status === 'pending')}
      <p><a href="/approvals">All approvals</a></p>`,
  )
}

function revokeForm(ctx: PageContext, level: string, value: string, label: string, id: string): Html {
  // the button's accessible name says what it revokes (several rows have a "Token" button)
  return html`<form method="post" action="/revoke" class="inline">
    ${csrfField(ctx)}<input type="hidden" name="level" value="${level}" /><input type="hidden" name="value" value="${value}" />
    <div><label for="${id}">Reason</label><input id="${id}" name="reason" required maxlength="400" /></div>
    <button type="submit" class="danger">${label}<span class="sr-only"> (revoke ${level} ${value})</span></button>
  </form>`
}

/** Who delegated to whom, outermost first: the subject, then each actor (`act` lists the current actor first). */
function tokenChain(t: LiveToken): { id: string; label: string }[] {
  const actors = [...t.actors].reverse()
  return [{ id: t.sub, label: 'subject' }, ...actors.map((a, i) => ({ id: a, label: i === actors.length - 1 ? 'holder (current actor)' : 'actor' }))]
}

export function instancesPage(ctx: PageContext, o: { instances: readonly LiveInstance[] }): Html {
  let n = 0
  return layout(
    ctx,
    'Live instances',
    html`<p>Agent instances holding unexpired, unrevoked broker tokens. Tokens are shown by identifier only.</p>
      ${o.instances.length === 0 ? html`<p>No live instance.</p>` : undefined}
      ${o.instances.map((inst) => {
        const k = n++
        return html`<section class="card" aria-labelledby="inst-${k}">
          <h2 id="inst-${k}"><code>${inst.spiffeId}</code></h2>
          ${revokeForm(ctx, 'instance', inst.spiffeId, 'Revoke this instance', `ri-${k}`)}
          <div class="scroll">
            <table>
              <thead>
                <tr>
                  <th scope="col">jti</th>
                  <th scope="col">Scopes</th>
                  <th scope="col">Audience</th>
                  <th scope="col">Task</th>
                  <th scope="col">Binding</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Revoke</th>
                </tr>
              </thead>
              <tbody>
                ${inst.tokens.map((t, j) => {
                  const rid = `rt-${k}-${j}`
                  return html`<tr>
                    <td><code>${t.jti}</code>${t.kind === 'grant' ? html` <span class="badge">grant</span>` : undefined}</td>
                    <td>${t.scopes.join(' ')}</td>
                    <td><code>${t.audiences.join(' ')}</code></td>
                    <td>${t.taskId ? html`<code>${t.taskId}</code>` : '—'}</td>
                    <td>${t.binding}</td>
                    <td>${time(t.exp)}</td>
                    <td>
                      ${revokeForm(ctx, 'token', t.jti, 'Token', rid)}
                      ${t.actors.length > 0 || t.parentJti ? revokeForm(ctx, 'chain', t.jti, 'Whole chain', `${rid}-c`) : undefined}
                      ${t.taskId ? revokeForm(ctx, 'task', t.taskId, 'Task', `${rid}-t`) : undefined}
                    </td>
                  </tr>`
                })}
              </tbody>
            </table>
          </div>
          ${inst.tokens
            .filter((t) => t.actors.length > 0)
            .map(
              (t) =>
                html`<h3>Delegation chain of <code>${t.jti}</code></h3>
                  <div class="scroll">${chainGraph(tokenChain(t), `Delegation chain of token ${t.jti}`)}</div>`,
            )}
        </section>`
      })}`,
  )
}

export function revocationsPage(ctx: PageContext, o: { revocations: readonly RevocationView[] }): Html {
  return layout(
    ctx,
    'Revocations',
    html`<section class="card" aria-labelledby="new">
        <h2 id="new">Revoke</h2>
        <form method="post" action="/revoke">
          ${csrfField(ctx)}
          <fieldset>
            <legend>Level</legend>
            <label><input type="radio" name="level" value="token" required /> Token (by jti, with everything derived from it)</label>
            <label><input type="radio" name="level" value="instance" /> Instance (SPIFFE ID: every token it holds, was issued or acted on)</label>
            <label><input type="radio" name="level" value="task" /> Task (task ID: every token of the task)</label>
            <label><input type="radio" name="level" value="chain" /> Delegation chain (a jti: its whole tree; or an actor's SPIFFE ID)</label>
          </fieldset>
          <label for="rv-value">What to revoke</label>
          <input id="rv-value" name="value" required maxlength="2048" size="60" />
          <label for="rv-reason">Reason</label>
          <input id="rv-reason" name="reason" required maxlength="400" size="60" />
          <p><button type="submit" class="danger">Revoke</button></p>
        </form>
      </section>
      <h2>In force</h2>
      ${
        o.revocations.length === 0
          ? html`<p>None.</p>`
          : html`<div class="scroll">
              <table>
                <thead>
                  <tr>
                    <th scope="col">#</th>
                    <th scope="col">Level</th>
                    <th scope="col">Value</th>
                    <th scope="col">Reason</th>
                    <th scope="col">By</th>
                    <th scope="col">At</th>
                    <th scope="col">Until</th>
                  </tr>
                </thead>
                <tbody>
                  ${[...o.revocations].reverse().map(
                    (r) =>
                      html`<tr>
                        <td>${r.seq}</td>
                        <td>${r.kind}</td>
                        <td><code>${r.value}</code></td>
                        <td>${r.reason ?? ''}</td>
                        <td>${r.createdBy}</td>
                        <td>${time(r.createdAt)}</td>
                        <td>${time(r.expiresAt)}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>
            </div>`
      }`,
  )
}

export function auditPage(ctx: PageContext, o: { configured: boolean; status?: AuditStatus; entries: readonly AuditEntryView[] }): Html {
  if (!o.configured || !o.status) return layout(ctx, 'Audit log', html`<p class="notice">This broker keeps no audit log ([broker.audit] enabled = false).</p>`)
  const s = o.status
  return layout(
    ctx,
    'Audit log',
    html`<section class="card" aria-labelledby="ver">
        <h2 id="ver">Verification</h2>
        <p>
          ${
            s.verification === 'ok'
              ? html`<span class="badge ok">verified</span> hash chain, Merkle tree and every checkpoint signature`
              : s.verification === 'unsigned'
                ? html`<span class="badge warn">chained, not yet signed</span> no checkpoint yet`
                : html`<span class="badge bad">FAILED</span>`
          }
          · ${s.size} events · checked ${new Date(s.verifiedAt).toISOString()}
        </p>
        ${
          s.problems.length > 0
            ? html`<ul>
                ${s.problems.map((p) => html`<li>${p}</li>`)}
              </ul>`
            : undefined
        }
        ${s.verifierKey ? html`<p class="muted">Verifier key <code>${s.verifierKey}</code></p>` : undefined}
        <h3>Latest checkpoint</h3>
        ${
          s.checkpoint
            ? html`<p>Tree size ${s.checkpoint.size}, signed ${new Date(s.checkpoint.createdAt).toISOString()}</p>
                <pre>${s.checkpoint.note}</pre>`
            : html`<p>No checkpoint signed yet.</p>`
        }
      </section>
      <h2>Latest events</h2>
      <div class="scroll">
        <table>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Time</th>
              <th scope="col">Type</th>
              <th scope="col">Outcome</th>
              <th scope="col">Actor</th>
              <th scope="col">Subject</th>
              <th scope="col">Token / task</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            ${[...o.entries].reverse().map(
              (e) =>
                html`<tr>
                  <td>${e.seq}</td>
                  <td>${e.time}</td>
                  <td>${e.type}</td>
                  <td>${e.outcome}</td>
                  <td><code>${e.actor ?? ''}</code></td>
                  <td><code>${e.subject ?? ''}</code></td>
                  <td><code>${e.tokenId ?? e.taskId ?? ''}</code></td>
                  <td>${e.reason ?? ''}</td>
                </tr>`,
            )}
          </tbody>
        </table>
      </div>`,
  )
}

export function signalsPage(ctx: PageContext, o: { configured: boolean; signals: readonly SignalView[] }): Html {
  if (!o.configured) return layout(ctx, 'Signals', html`<p class="notice">This broker receives no Shared Signals ([broker.signals] transmitters).</p>`)
  return layout(
    ctx,
    'Received signals',
    o.signals.length === 0
      ? html`<p>No signal received.</p>`
      : html`<div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Received</th>
                <th scope="col">From</th>
                <th scope="col">Event</th>
                <th scope="col">Subject</th>
                <th scope="col">Action</th>
                <th scope="col">Outcome</th>
              </tr>
            </thead>
            <tbody>
              ${[...o.signals].reverse().map(
                (s) =>
                  html`<tr>
                    <td>${s.id}</td>
                    <td>${time(s.receivedAt)}</td>
                    <td><code>${s.issuer}</code></td>
                    <td><code>${s.eventType.replace(/^https:\/\/schemas\.openid\.net\/secevent\//, '')}</code></td>
                    <td><code>${s.subject}</code></td>
                    <td>${s.action}</td>
                    <td><span class="badge ${s.outcome === 'applied' ? 'ok' : s.outcome.startsWith('failed') ? 'bad' : ''}">${s.outcome}</span></td>
                  </tr>`,
              )}
            </tbody>
          </table>
        </div>`,
  )
}

export function overviewPage(ctx: PageContext, o: { rates: readonly RateBucket[]; pending: number | undefined; instances: number; audit?: AuditStatus }): Html {
  return layout(
    ctx,
    'Overview',
    html`<ul>
        <li>${o.pending === undefined ? 'Approvals are not configured.' : html`<a href="/approvals">${o.pending} intent(s) waiting for approval</a>`}</li>
        <li><a href="/instances">${o.instances} live instance(s)</a></li>
        ${
          o.audit
            ? html`<li>
                <a href="/audit">Audit log</a>:
                ${o.audit.verification === 'failed' ? html`<span class="badge bad">FAILED</span>` : html`<span class="badge ok">${o.audit.verification === 'ok' ? 'verified' : 'chained'}</span>`},
                ${o.audit.size} events
              </li>`
            : undefined
        }
      </ul>
      <h2>Token issuance and refusals</h2>
      <p class="muted">Token endpoint decisions per minute since the broker started.</p>
      <div class="scroll">${rateChart(o.rates, 'Token issuance and refusals per minute')}</div>`,
  )
}

export function errorPage(ctx: PageContext, status: number, text: string): Html {
  return layout(
    ctx,
    status === 404 ? 'Not found' : status === 403 ? 'Forbidden' : 'Error',
    html`<p>${text}</p>
      <p><a href="/">Back</a></p>`,
  )
}
