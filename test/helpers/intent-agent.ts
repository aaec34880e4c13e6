/**
 * An agent process that declares intents to the broker over OpenID CIBA and
 * waits for a human's decision, as an agent built on `src/broker-client`
 * would: its X.509-SVID from the Workload API (mutual TLS), DPoP-bound tokens.
 *
 * `node --import tsx test/helpers/intent-agent.ts '<json>'` with
 * `{socketPath, spiffeId, issuer, caFile, task, action, resources}`. Prints
 * `{"declared":[{"resource","intentId","authReqId"}]}` once every intent is
 * waiting, then one `{"resource","outcome":"token","scope","details"}` or
 * `{"resource","outcome":"<oauth error>"}` line per decision, and exits.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { BrokerClient, oauthErrorOf } from '../../src/broker-client/index.js'
import { X509Source } from '../../src/workload-client/x509-source.js'

const o = JSON.parse(process.argv[2] ?? '{}') as {
  socketPath: string
  spiffeId: string
  issuer: string
  caFile: string
  task: string
  action: string
  resources: string[]
}
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`)
const digest = (s: string) => createHash('sha256').update(s).digest('base64url')

const source = await X509Source.create({
  socketPath: o.socketPath,
  picker: (svids) => svids.find((s) => s.id.toString() === o.spiffeId) ?? svids[0]!,
  signal: AbortSignal.timeout(60_000),
})
const client = await BrokerClient.create({ issuer: o.issuer, source, ca: readFileSync(o.caFile, 'utf8') })
try {
  const declared = []
  for (const resource of o.resources) {
    const req = await client.backchannelAuthorize({
      authorizationDetails: [
        {
          type: 'warrant_intent',
          actions: [o.action],
          locations: [resource],
          params_digest: digest(`${o.action} ${resource}`),
          declared_risk: 0.2,
          task: o.task,
        },
      ],
      bindingMessage: 'e2e',
    })
    declared.push({ resource, intentId: req.intentId, authReqId: req.authReqId, req })
  }
  out({ declared: declared.map(({ req: _r, ...d }) => d) })
  await Promise.all(
    declared.map(({ resource, req }) =>
      client.waitForApproval(req).then(
        (t) => out({ resource, outcome: 'token', scope: t.scopes.join(' '), details: t.claims.authorization_details }),
        (err: unknown) => out({ resource, outcome: oauthErrorOf(err) ?? String(err) }),
      ),
    ),
  )
} finally {
  await client.close()
  await source.close()
}
