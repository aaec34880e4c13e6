/**
 * `warrant credential put|list|delete`: tools' static credentials held by the
 * broker for the gateway to inject (credential shielding), over the broker's
 * admin socket. The value is read from a file or stdin, never from the command
 * line (where `ps` would show it), and is never printed back.
 */
import { readFileSync } from 'node:fs'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { brokerAdminCall as call, DEFAULT_BROKER_ADMIN_SOCKET } from '../broker-admin-client.js'

export const usage = [
  "  credential put --tool NAME --header H [--scheme Bearer] (--value-file F | --value-stdin)   seal a tool's static credential in the broker",
  '  credential list | credential delete --tool NAME            (--socket PATH, --output json; values are never shown)',
].join('\n')

interface CredentialWire {
  tool: string
  header: string
  scheme?: string
  version: number
  createdBy: string
  createdAt: number
}

function readValue(file: string | undefined, stdin: boolean | undefined): string {
  if ((file === undefined) === !stdin)
    throw new IdentityError('ERR_INVALID_ARGUMENT', 'give exactly one of --value-file F or --value-stdin (never the value itself)')
  const raw = stdin ? readFileSync(0, 'utf8') : readFileSync(file!, 'utf8')
  return raw.replace(/\r?\n$/, '')
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  const { values } = parseFlags(rest, {
    socket: { type: 'string' },
    output: { type: 'string' },
    tool: { type: 'string' },
    header: { type: 'string' },
    scheme: { type: 'string' },
    'value-file': { type: 'string' },
    'value-stdin': { type: 'boolean' },
  })
  const socket = values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET
  const json = outputFormat(values.output) === 'json'
  switch (cmd) {
    case 'put': {
      if (!values.tool || !values.header) throw new IdentityError('ERR_INVALID_ARGUMENT', '--tool and --header are required')
      const value = readValue(values['value-file'], values['value-stdin'])
      const r = await call<CredentialWire>(socket, 'POST', `/v1/credentials/${encodeURIComponent(values.tool)}`, {
        header: values.header,
        ...(values.scheme ? { scheme: values.scheme } : {}),
        value,
      })
      if (json) printJson(r)
      else
        process.stdout.write(`Stored the credential of ${r.tool} (header ${r.header}${r.scheme ? `, scheme ${r.scheme}` : ''}, version ${r.version}), sealed\n`)
      return 0
    }
    case 'list': {
      const r = await call<{ credentials: CredentialWire[] }>(socket, 'GET', '/v1/credentials')
      if (json) printJson(r)
      else
        for (const c of r.credentials)
          process.stdout.write(`${c.tool}\t${c.header}${c.scheme ? ` (${c.scheme})` : ''}\tv${c.version}\t${new Date(c.createdAt * 1000).toISOString()}\n`)
      return 0
    }
    case 'delete': {
      if (!values.tool) throw new IdentityError('ERR_INVALID_ARGUMENT', '--tool is required')
      const r = await call<{ deleted: boolean }>(socket, 'POST', `/v1/credentials/${encodeURIComponent(values.tool)}/delete`)
      if (json) printJson(r)
      else process.stdout.write(r.deleted ? `Deleted the credential of ${values.tool}\n` : `No credential for ${values.tool}\n`)
      return r.deleted ? 0 : 1
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
