/**
 * `npm run bench -- tpm`: wall time of one full `tpm` node attestation with
 * our TypeScript stack (EK certificate read and EK public, ECC P-256 AK
 * creation with CertifyCreation, server-side EK chain / AK checks and
 * MakeCredential, ActivateCredential, quote, PCR read, server-side quote
 * verification) against the same steps done with tpm2-tools
 * (tpm2_createek, tpm2_createak -G ecc, tpm2_makecredential,
 * tpm2_startauthsession + tpm2_policysecret + tpm2_activatecredential,
 * tpm2_quote, tpm2_checkquote) on the same swtpm in the same run.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { createTpmAgentAttestor } from '../attestors/node/tpm/agent.js'
import { parseTpmAgentConfig, parseTpmServerConfig } from '../attestors/node/tpm/config.js'
import { tpmServerPlugin } from '../attestors/node/tpm/server.js'
import { systemClock } from '../src/common/clock.js'
import { nullLogger } from '../src/common/log/logger.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { startSwtpm } from '../test/helpers/swtpm.js'
import { tempDir } from '../test/helpers/temp.js'
import { percentile, report } from './lib.js'

const execFileP = promisify(execFile)
const PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16]
const ROUNDS = 7

export async function run(_args: string[]): Promise<void> {
  const tpm = await startSwtpm()
  const tmp = tempDir('tpmb-')
  try {
    const server = await tpmServerPlugin.create(
      parseTpmServerConfig({ ek_ca_paths: [join(tpm.caDir, 'swtpm-localca-rootca-cert.pem'), join(tpm.caDir, 'issuercert.pem')], pcrs: PCRS }),
      { log: nullLogger, clock: systemClock, trustDomain: TrustDomain.fromString('bench.example'), dataDir: tmp.dir },
    )
    const agent = createTpmAgentAttestor(parseTpmAgentConfig({ swtpm: `127.0.0.1:${tpm.port}`, ek_type: 'rsa' }), { log: nullLogger })
    const ours = async (): Promise<void> => {
      await server.attest(await agent.payload({}), (c) => agent.answer(c, {}), {})
    }

    const f = (n: string): string => join(tmp.dir, n)
    const env = { ...process.env, TPM2TOOLS_TCTI: tpm.tcti }
    const sh = async (cmd: string, ...args: string[]): Promise<void> => {
      await execFileP(cmd, args, { env, cwd: tmp.dir })
    }
    const tools = async (): Promise<void> => {
      const nonce = randomBytes(32).toString('hex')
      await sh('tpm2_createek', '-c', f('ek.ctx'), '-G', 'rsa', '-u', f('ek.pub'))
      await sh('tpm2_createak', '-C', f('ek.ctx'), '-c', f('ak.ctx'), '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', f('ak.pub'), '-n', f('ak.name'))
      await sh('tpm2_flushcontext', '-t')
      await sh('tpm2_flushcontext', '-s')
      const name = await execFileP('xxd', ['-p', '-c', '256', f('ak.name')]).then((r) => r.stdout.trim())
      await sh('tpm2_makecredential', '-T', 'none', '-e', f('ek.pub'), '-s', f('secret.bin'), '-n', name, '-o', f('mkcred.out'))
      await sh('tpm2_startauthsession', '--policy-session', '-S', f('session.ctx'))
      await sh('tpm2_policysecret', '-S', f('session.ctx'), '-c', 'e')
      await sh('tpm2_activatecredential', '-c', f('ak.ctx'), '-C', f('ek.ctx'), '-i', f('mkcred.out'), '-o', f('actcred.out'), '-P', `session:${f('session.ctx')}`)
      await sh('tpm2_flushcontext', '-t')
      await sh('tpm2_quote', '-c', f('ak.ctx'), '-l', `sha256:${PCRS.join(',')}`, '-q', nonce, '-m', f('quote.msg'), '-s', f('quote.sig'), '-o', f('quote.pcrs'), '-g', 'sha256')
      await sh('tpm2_flushcontext', '-t')
      await sh('tpm2_checkquote', '-u', f('ak.pub'), '-m', f('quote.msg'), '-s', f('quote.sig'), '-f', f('quote.pcrs'), '-g', 'sha256', '-q', nonce)
    }
    await execFileP('sh', ['-c', `head -c 32 /dev/urandom > ${f('secret.bin')}`])

    // Warm up both (first primary creations, module loading), then interleave rounds.
    await ours()
    await tools()
    const a: number[] = []
    const b: number[] = []
    for (let i = 0; i < ROUNDS; i++) {
      let t = performance.now()
      await ours()
      a.push(performance.now() - t)
      t = performance.now()
      await tools()
      b.push(performance.now() - t)
    }
    report('tpm_attest_vs_tpm2_tools', percentile(a, 50), percentile(b, 50), 'ms', {
      rounds: ROUNDS,
      ours_p90: Math.round(percentile(a, 90) * 10) / 10,
      tools_p90: Math.round(percentile(b, 90) * 10) / 10,
      target_ratio: 0.5,
    })
  } finally {
    await tpm.stop()
    tmp.cleanup()
  }
}
