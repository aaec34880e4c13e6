/**
 * `npm run bench -- tpm`: wall time of one full `tpm` node attestation with
 * our TypeScript stack against the same steps done with tpm2-tools and
 * openssl on the same swtpm in the same run, rounds interleaved.
 *
 * Both sides, in order: read the EK certificate from NV (0x01c00002); read
 * the persistent RSA EK that swtpm_setup provisioned (0x81010001, no EK
 * creation on either side); create an ECC P-256 SRK, create and load an ECC
 * P-256 restricted signing AK under it, flush the SRK, CertifyCreation of the
 * AK by itself. Server: verify the EK certificate chain to the swtpm local
 * CA (ours: verifyEk; baseline: `openssl verify` with the root as CA file and
 * the intermediate as untrusted), check that the certificate's key is the
 * EK, verify the CertifyCreation signature with the AK public key (baseline:
 * `openssl dgst -verify`), MakeCredential to the EK for the AK's name.
 * Agent: recreate the SRK, reload the AK, flush the SRK, PolicySecret
 * session + ActivateCredential with the persistent EK, quote the PCRs with
 * the server's nonce (tpm2_quote also reads them). Server: compare the
 * activated secret, verify quote signature, nonce and PCR digest
 * (tpm2_checkquote).
 *
 * Checks only ours does, stated in the printed figure (`baseline_omits`):
 * the EK and AK public areas' attributes and the creation data's digest
 * against the CertifyCreation attestation. tpm2-tools has no command for
 * them; they are in-process checks of well under a millisecond.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
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
/** TCG EK Credential Profile: RSA EK certificate NV index and persistent RSA EK handle. */
const EK_CERT_NV = '0x01c00002'
const PERSISTENT_EK_RSA = '0x81010001'
/** The same AK attributes as src/tpm/templates.ts AK_ATTRIBUTES (0x00050472). */
const AK_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign'

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
    const out = async (cmd: string, ...args: string[]): Promise<string> => (await execFileP(cmd, args, { env, cwd: tmp.dir })).stdout
    const caRoot = join(tpm.caDir, 'swtpm-localca-rootca-cert.pem')
    const caIssuer = join(tpm.caDir, 'issuercert.pem')
    // The same steps as ours, one tool per TPM command or server-side check. Each tool is its own process
    // and swtpm has no resource manager, so every context a tool loads stays loaded: transient objects are
    // flushed (tpm2_flushcontext -t) where the next command would run out of object slots.
    const tools = async (): Promise<void> => {
      const nonce = randomBytes(32).toString('hex')
      // Agent, payload: EK certificate from NV, the persistent EK that swtpm_setup provisioned (no creation),
      // an ECC AK created and loaded under a fresh SRK, which certifies its own creation.
      await sh('tpm2_nvread', '-C', 'o', '-o', f('ek.der'), EK_CERT_NV)
      await sh('tpm2_readpublic', '-c', PERSISTENT_EK_RSA, '-f', 'pem', '-o', f('ek.pem'))
      await sh('tpm2_createprimary', '-C', 'o', '-G', 'ecc256:null:aes128cfb', '-c', f('srk.ctx'))
      await sh('tpm2_flushcontext', '-t')
      await sh(
        'tpm2_create',
        '-C',
        f('srk.ctx'),
        '-G',
        'ecc256:ecdsa-sha256:null',
        '-a',
        AK_ATTRIBUTES,
        '-u',
        f('ak.pub'),
        '-r',
        f('ak.priv'),
        '--creation-data',
        f('ak.cdata'),
        '--creation-ticket',
        f('ak.ticket'),
        '--creation-hash',
        f('ak.chash'),
      )
      await sh('tpm2_load', '-C', f('srk.ctx'), '-u', f('ak.pub'), '-r', f('ak.priv'), '-c', f('ak.ctx'), '-n', f('ak.name'))
      await sh('tpm2_flushcontext', '-t')
      await sh(
        'tpm2_certifycreation',
        '-C',
        f('ak.ctx'),
        '-c',
        f('ak.ctx'),
        '-d',
        f('ak.chash'),
        '-t',
        f('ak.ticket'),
        '-g',
        'sha256',
        '-f',
        'plain',
        '-o',
        f('cc.sig'),
        '--attestation',
        f('cc.attest'),
      )
      await sh('tpm2_flushcontext', '-t')
      // Server: EK certificate chain to the swtpm CA and EK certificate key = EK public; AK public and its
      // CertifyCreation signature; MakeCredential to the EK for the AK's name.
      const certAndKey = await out('openssl', 'x509', '-inform', 'der', '-in', f('ek.der'), '-pubkey')
      await writeFile(f('ek-cert.pem'), certAndKey)
      await sh('openssl', 'verify', '-CAfile', caRoot, '-untrusted', caIssuer, '-purpose', 'any', f('ek-cert.pem'))
      const certKey = certAndKey.slice(0, certAndKey.indexOf('-----BEGIN CERTIFICATE-----')).trim()
      if (certKey !== (await readFile(f('ek.pem'), 'utf8')).trim()) throw new Error('EK certificate does not match the EK')
      await writeFile(f('ak.pem'), await out('tpm2_print', '-t', 'TPM2B_PUBLIC', '-f', 'pem', f('ak.pub')))
      await sh('openssl', 'dgst', '-sha256', '-verify', f('ak.pem'), '-signature', f('cc.sig'), f('cc.attest'))
      const name = (await readFile(f('ak.name'))).toString('hex')
      await sh('tpm2_makecredential', '-T', 'none', '-u', f('ek.pem'), '-G', 'rsa', '-s', f('secret.bin'), '-n', name, '-o', f('mkcred.out'))
      // Agent, answer: AK reloaded under a fresh SRK, credential activated with the persistent EK, quote.
      await sh('tpm2_createprimary', '-C', 'o', '-G', 'ecc256:null:aes128cfb', '-c', f('srk.ctx'))
      await sh('tpm2_flushcontext', '-t')
      await sh('tpm2_load', '-C', f('srk.ctx'), '-u', f('ak.pub'), '-r', f('ak.priv'), '-c', f('ak.ctx'))
      await sh('tpm2_flushcontext', '-t')
      await sh('tpm2_startauthsession', '--policy-session', '-S', f('session.ctx'))
      await sh('tpm2_policysecret', '-S', f('session.ctx'), '-c', 'e')
      await sh(
        'tpm2_activatecredential',
        '-c',
        f('ak.ctx'),
        '-C',
        PERSISTENT_EK_RSA,
        '-i',
        f('mkcred.out'),
        '-o',
        f('actcred.out'),
        '-P',
        `session:${f('session.ctx')}`,
      )
      await sh('tpm2_flushcontext', '-t')
      await sh(
        'tpm2_quote',
        '-c',
        f('ak.ctx'),
        '-l',
        `sha256:${PCRS.join(',')}`,
        '-q',
        nonce,
        '-m',
        f('quote.msg'),
        '-s',
        f('quote.sig'),
        '-o',
        f('quote.pcrs'),
        '-g',
        'sha256',
      )
      await sh('tpm2_flushcontext', '-t')
      // Server: activated secret, quote signature, nonce and PCR digest.
      if (!(await readFile(f('actcred.out'))).equals(await readFile(f('secret.bin')))) throw new Error('activated secret does not match')
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
      ek: 'persistent (swtpm_setup) on both sides',
      baseline_omits: 'EK/AK public-area attribute checks and the creation-data digest check (no tpm2-tools command; in-process on our side)',
    })
  } finally {
    await tpm.stop()
    tmp.cleanup()
  }
}
