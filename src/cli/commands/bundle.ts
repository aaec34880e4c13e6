import { readFileSync } from 'node:fs'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  bundle show [--trust-domain TD] [--format pem|spiffe]   the local (or a federated) bundle',
  '  bundle list                                               federated bundles',
  '  bundle set --trust-domain TD [--format spiffe|pem] [--path FILE | stdin]',
  '  bundle delete --trust-domain TD',
].join('\n')

type BundleMsg = { trust_domain: string; document: string; sequence: string }

function render(b: BundleMsg, format: string): string {
  if (format === 'spiffe') return `${JSON.stringify(JSON.parse(b.document), null, 4)}\n`
  if (format === 'pem')
    return new X509Bundle(
      TrustDomain.fromString(b.trust_domain),
      SpiffeBundle.parse(TrustDomain.fromString(b.trust_domain), b.document).x509Authorities,
    ).toPem()
  throw new IdentityError('ERR_INVALID_ARGUMENT', '--format must be "pem" or "spiffe"')
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  const flags = {
    'trust-domain': { type: 'string' },
    format: { type: 'string' },
    path: { type: 'string' },
    socket: { type: 'string' },
    output: { type: 'string' },
  } as const
  const { values } = parseFlags(rest, flags)
  const c = adminClient('Bundles', values.socket ?? DEFAULT_ADMIN_SOCKET)
  const fmt = outputFormat(values.output)
  try {
    switch (cmd) {
      case 'show': {
        const b = await c.call<BundleMsg>('Get', { trust_domain: values['trust-domain'] ?? '' })
        if (fmt === 'json') printJson({ trust_domain: b.trust_domain, sequence: Number(b.sequence), bundle: JSON.parse(b.document) as unknown })
        else process.stdout.write(render(b, values.format ?? 'pem'))
        return 0
      }
      case 'list': {
        const r = await c.call<{ bundles: BundleMsg[] }>('ListFederated', {})
        if (fmt === 'json')
          printJson({
            bundles: r.bundles.map((b) => ({ trust_domain: b.trust_domain, sequence: Number(b.sequence), bundle: JSON.parse(b.document) as unknown })),
          })
        else
          for (const b of r.bundles)
            process.stdout.write(
              `****************************************\n* ${b.trust_domain}\n****************************************\n${render(b, values.format ?? 'pem')}\n`,
            )
        return 0
      }
      case 'set': {
        if (!values['trust-domain']) throw new IdentityError('ERR_INVALID_ARGUMENT', '--trust-domain is required')
        const data = values.path ? readFileSync(values.path, 'utf8') : readFileSync(0, 'utf8')
        const b = await c.call<BundleMsg>('Set', { trust_domain: values['trust-domain'], format: values.format ?? 'spiffe', data })
        if (fmt === 'json') printJson({ trust_domain: b.trust_domain, sequence: Number(b.sequence) })
        else process.stdout.write(`Bundle set for ${b.trust_domain} (sequence ${b.sequence}).\n`)
        return 0
      }
      case 'delete': {
        if (!values['trust-domain']) throw new IdentityError('ERR_INVALID_ARGUMENT', '--trust-domain is required')
        await c.call('Delete', { trust_domain: values['trust-domain'] })
        if (fmt === 'json') printJson({ deleted: values['trust-domain'] })
        else process.stdout.write(`Bundle deleted for ${values['trust-domain']}.\n`)
        return 0
      }
      default:
        process.stderr.write(`usage:\n${usage}\n`)
        return 2
    }
  } finally {
    c.close()
  }
}
