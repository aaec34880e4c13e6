/** The broker's admin API (JSON over its 0600 Unix socket), as `warrant task` and `warrant revoke` call it. */
import http from 'node:http'
import { ERROR_CODES, type ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'

/** Default admin socket of a broker embedded in a server with the default data_dir. */
export const DEFAULT_BROKER_ADMIN_SOCKET = './.warrant/server/private/broker-admin.sock'

/** One JSON request to the broker's admin API over its Unix socket; errors come back as IdentityError with the broker's code. */
export function brokerAdminCall<T>(socketPath: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          let parsed: unknown
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'))
          } catch {
            reject(new IdentityError('ERR_UNAVAILABLE', `broker admin API answered ${res.statusCode} without JSON`))
            return
          }
          if ((res.statusCode ?? 500) >= 400) {
            const e = parsed as { error?: string; message?: string }
            const code = e.error !== undefined && e.error in ERROR_CODES ? (e.error as ErrorCode) : 'ERR_INTERNAL'
            reject(new IdentityError(code, e.message ?? 'request failed'))
            return
          }
          resolve(parsed as T)
        })
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', (err) => reject(new IdentityError('ERR_UNAVAILABLE', `cannot reach the broker admin API at ${socketPath}: ${err.message}`, { cause: err })))
    if (payload !== undefined) req.write(payload)
    req.end()
  })
}

/** An intent as the admin socket lists it (src/broker/intents/intent.ts `approvalToWire`). */
export interface ApprovalWire {
  id: string
  status: string
  action: string
  resource: string
  params_digest: string
  declared_risk?: number
  risk: number
  factors: { rule: string; weight: number; detail: string }[]
  decided_by?: string
  approver?: { id: string; method: string }
  reason?: string
  approver_group?: string
  agent: string
  task_id?: string
  node_attestation?: string
  delegation: string[]
  created_at: number
  expires_at: number
  binding_message?: string
  token_id?: string
}

/** The approval queue (`warrant approval list`): newest first, `status` all when undefined. */
export async function listApprovals(socketPath: string, o: { status?: string; limit?: number } = {}): Promise<ApprovalWire[]> {
  const q = new URLSearchParams({ ...(o.status !== undefined ? { status: o.status } : {}), ...(o.limit !== undefined ? { limit: String(o.limit) } : {}) })
  const qs = q.toString()
  return (await brokerAdminCall<{ approvals: ApprovalWire[] }>(socketPath, 'GET', `/v1/approvals${qs ? `?${qs}` : ''}`)).approvals
}

export function getApproval(socketPath: string, id: string): Promise<ApprovalWire> {
  return brokerAdminCall<ApprovalWire>(socketPath, 'GET', `/v1/approvals/${encodeURIComponent(id)}`)
}

/** Approves or denies a pending intent as this user (recorded as approver `cli:<uid>`, method `unix-socket`). */
export function decideApproval(socketPath: string, id: string, decision: 'approve' | 'deny', reason?: string): Promise<ApprovalWire> {
  return brokerAdminCall<ApprovalWire>(socketPath, 'POST', `/v1/approvals/${encodeURIComponent(id)}/${decision}`, {
    uid: process.getuid?.() ?? 0,
    ...(reason !== undefined ? { reason } : {}),
  })
}
