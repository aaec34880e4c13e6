/** Internal: PEM text ↔ DER for this module (RFC 7468 strict base64, text outside blocks ignored). */

export interface PemBlock {
  label: string
  der: Uint8Array
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]{1,64})-----([\s\S]*?)-----END ([A-Z0-9 ]{1,64})-----/g
const B64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Reads every PEM block; returns undefined when a block is malformed. */
export function readPemBlocks(text: string): PemBlock[] | undefined {
  const out: PemBlock[] = []
  for (const m of text.matchAll(BLOCK)) {
    if (m[1] !== m[3]) return undefined
    const body = m[2]!.replace(/[ \t\r\n]/g, '')
    if (!B64.test(body) || body.length % 4 !== 0 || body.length === 0) return undefined
    const der = Buffer.from(body, 'base64')
    if (der.toString('base64') !== body) return undefined
    out.push({ label: m[1]!, der: new Uint8Array(der) })
  }
  return out
}

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`
}
