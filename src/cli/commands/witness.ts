/**
 * `warrant witness keygen|run|submit`: a C2SP tlog-witness for warrant's audit
 * logs (or any log whose checkpoints are signed with a type 0x02 verifier key),
 * and the log side that asks it for a cosignature.
 *
 * - `keygen` writes an Ed25519 key (PKCS#8 PEM, mode 0600; refused if the file
 *   exists) and prints the witness's verifier key (type 0x04).
 * - `run` serves `POST /add-checkpoint` (plain HTTP: nothing secret crosses it,
 *   every answer is a signature or a size; put it behind TLS if you like) with
 *   its record of the latest cosigned checkpoint per log in `--state`.
 * - `submit` takes a log file's latest checkpoint, proves it consistent with
 *   the witness's record (asking with old size 0 first when it does not know
 *   it), checks the cosignature with the witness key, and writes the
 *   cosigned checkpoint to `--out`, for `warrant audit verify --checkpoint F
 *   --witness-key VKEY`.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer, request } from 'node:http'
import { addSignatures, openCheckpoint, parseVerifierKey } from '../../audit/checkpoint.js'
import { consistencyProof } from '../../audit/merkle.js'
import { AuditLogReader } from '../../audit/store/log-reader.js'
import { FileWitnessState } from '../../audit/store/witness-state.js'
import { parseWitnessVerifierKey, Witness, witnessVerifierKey } from '../../audit/witness.js'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  witness keygen --name NAME --key-file F                  an Ed25519 witness key (0600) and its verifier key',
  '  witness run --name NAME --key-file F --log-key VKEY [--log-key ...] --state FILE [--listen 127.0.0.1:7380]',
  '                                                            serve C2SP tlog-witness add-checkpoint',
  '  witness submit --log FILE --witness URL --witness-key VKEY --out NOTE_FILE',
  '                                                            get the latest checkpoint of a log cosigned',
].join('\n')

const FLAGS = {
  name: { type: 'string' },
  'key-file': { type: 'string' },
  'log-key': { type: 'string', multiple: true },
  state: { type: 'string' },
  listen: { type: 'string' },
  log: { type: 'string' },
  witness: { type: 'string' },
  'witness-key': { type: 'string' },
  out: { type: 'string' },
  output: { type: 'string' },
} as const

const arg = (message: string): IdentityError => new IdentityError('ERR_INVALID_ARGUMENT', message)

function need(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw arg(`--${flag} is required`)
  return v
}

/** A vkey given inline or as a file holding it. */
function vkeyArg(v: string): string {
  return v.includes('+') ? v : readFileSync(v, 'utf8').trim()
}

function loadKey(path: string): KeyObject {
  const st = statSync(path)
  if ((st.mode & 0o077) !== 0)
    throw new IdentityError('ERR_KEY_INVALID', `witness key ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`)
  let key: KeyObject
  try {
    key = createPrivateKey(readFileSync(path))
  } catch (cause) {
    throw new IdentityError('ERR_KEY_INVALID', `witness key ${path} is not a PEM private key`, { cause })
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new IdentityError('ERR_KEY_INVALID', 'a witness key is Ed25519')
  return key
}

function post(url: string, body: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }, timeout: 10_000 },
      (res) => {
        let out = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => {
          out += c
          if (out.length > 65_536) req.destroy(new Error('witness answer too large'))
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: out }))
      },
    )
    req.on('timeout', () => req.destroy(new Error('witness timed out')))
    req.on('error', reject)
    req.end(body)
  })
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (!cmd || !['keygen', 'run', 'submit'].includes(cmd)) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, FLAGS)
  const json = outputFormat(values.output) === 'json'
  switch (cmd) {
    case 'keygen': {
      const name = need(values.name, 'name')
      const file = need(values['key-file'], 'key-file')
      if (existsSync(file)) throw arg(`${file} exists; a witness key is never overwritten`)
      const { privateKey, publicKey } = generateKeyPairSync('ed25519')
      writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' })
      const vkey = witnessVerifierKey(name, publicKey)
      if (json) printJson({ name, verifier_key: vkey })
      else process.stdout.write(`${vkey}\n`)
      return 0
    }
    case 'run': {
      const name = need(values.name, 'name')
      const key = loadKey(need(values['key-file'], 'key-file'))
      const logs = (values['log-key'] ?? []).map((v) => parseVerifierKey(vkeyArg(v)))
      if (logs.length === 0) throw arg('--log-key is required (the logs this witness follows)')
      const witness = new Witness({ name, privateKey: key, logs, state: new FileWitnessState(need(values.state, 'state')) })
      const [host, portS] = (values.listen ?? '127.0.0.1:7380').split(/:(?=\d+$)/) as [string, string | undefined]
      const server = createServer((req, res) => {
        if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/add-checkpoint') {
          res.writeHead(404).end()
          return
        }
        let body = ''
        let tooLarge = false
        req.setEncoding('utf8')
        req.on('data', (c: string) => {
          body += c
          if (body.length > 65_536 && !tooLarge) {
            tooLarge = true
            res.writeHead(413).end()
            req.destroy()
          }
        })
        req.on('end', () => {
          if (tooLarge) return
          witness.addCheckpoint(body).then(
            (a) => {
              if (a.status !== 200) process.stderr.write(`witness: add-checkpoint ${a.status}: ${a.reason}\n`)
              res.writeHead(a.status, { 'content-type': a.contentType }).end(a.body)
            },
            (err: unknown) => {
              process.stderr.write(`witness: add-checkpoint failed: ${err instanceof Error ? err.message : String(err)}\n`)
              res.writeHead(500).end()
            },
          )
        })
      })
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(Number(portS ?? 7380), host, () => resolve())
      })
      const addr = server.address()
      const port = typeof addr === 'object' && addr ? addr.port : Number(portS)
      process.stdout.write(`WARRANT_WITNESS_URL=http://${host}:${port}\nWARRANT_WITNESS_KEY=${witness.verifierKey()}\n`)
      await new Promise<void>((resolve) => {
        const stop = () => server.close(() => resolve())
        process.once('SIGTERM', stop)
        process.once('SIGINT', stop)
      })
      return 0
    }
    case 'submit': {
      const wv = parseWitnessVerifierKey(vkeyArg(need(values['witness-key'], 'witness-key')))
      const url = `${need(values.witness, 'witness').replace(/\/+$/, '')}/add-checkpoint`
      const out = need(values.out, 'out')
      const reader = AuditLogReader.open(need(values.log, 'log'))
      let note: string
      let size: number
      let leaves: Buffer[]
      try {
        const cps = reader.checkpoints()
        const latest = cps[cps.length - 1]
        if (!latest) throw new IdentityError('ERR_NOT_FOUND', 'the log has no checkpoint yet')
        note = latest.note
        size = latest.size
        leaves = reader.leafHashes(size)
      } finally {
        reader.close()
      }
      const body = (old: number) =>
        `old ${old}\n${(old === 0 ? [] : consistencyProof(leaves, old, size)).map((h) => `${h.toString('base64')}\n`).join('')}\n${note}`
      let r = await post(url, body(0))
      if (r.status === 409 && r.type.startsWith('text/x.tlog.size')) {
        const old = Number(r.body.trim())
        if (!Number.isSafeInteger(old) || old < 0 || old > size)
          throw new IdentityError(
            'ERR_AUDIT_CHECKPOINT_INVALID',
            `the witness has seen a larger tree (${r.body.trim().slice(0, 20)}) than this log's latest checkpoint`,
          )
        r = await post(url, body(old))
      }
      if (r.status !== 200) throw new IdentityError('ERR_AUDIT_CHECKPOINT_INVALID', `the witness refused the checkpoint (HTTP ${r.status})`)
      const lines = r.body.split('\n').filter((l) => l.startsWith('— '))
      const cosigned = addSignatures(note, lines)
      openCheckpoint(cosigned, wv)
      writeFileSync(out, cosigned)
      if (json) printJson({ ok: true, size, witness: wv.name, timestamp: wv.lastTimestamp })
      else process.stdout.write(`OK: checkpoint of ${size} events cosigned by ${wv.name}; written to ${out}\n`)
      return 0
    }
  }
  return 2
}
