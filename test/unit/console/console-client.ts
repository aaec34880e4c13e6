/** A tiny HTTPS client with one cookie jar, for the console's in-process tests. */
import https from 'node:https'

export interface ConsoleRes {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

export class ConsoleClient {
  readonly base: string
  readonly ca: string
  cookie: string | undefined

  constructor(base: string, ca: string) {
    this.base = base
    this.ca = ca
  }

  request(method: string, path: string, o: { form?: Record<string, string>; json?: unknown; headers?: Record<string, string> } = {}): Promise<ConsoleRes> {
    const body = o.form ? new URLSearchParams(o.form).toString() : o.json !== undefined ? JSON.stringify(o.json) : undefined
    const headers: Record<string, string> = { ...(o.headers ?? {}) }
    if (o.form) headers['content-type'] = 'application/x-www-form-urlencoded'
    if (o.json !== undefined) headers['content-type'] = 'application/json'
    if (this.cookie) headers.cookie = this.cookie
    return new Promise((resolve, reject) => {
      const req = https.request(`${this.base}${path}`, { method, headers, ca: this.ca, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const set = res.headers['set-cookie']
          for (const c of set ?? []) {
            const [pair] = c.split(';')
            const [, value] = pair!.split('=')
            this.cookie = value === '' ? undefined : pair
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') })
        })
      })
      req.on('error', reject)
      if (body !== undefined) req.write(body)
      req.end()
    })
  }

  get(path: string): Promise<ConsoleRes> {
    return this.request('GET', path)
  }

  post(path: string, form: Record<string, string>, headers?: Record<string, string>): Promise<ConsoleRes> {
    return this.request('POST', path, { form, ...(headers ? { headers } : {}) })
  }
}

/** The CSRF token of a rendered page. */
export function csrfOf(page: string): string {
  const m = /<meta name="csrf-token" content="([^"]*)"/.exec(page)
  if (!m) throw new Error('no csrf token on the page')
  return m[1]!
}
