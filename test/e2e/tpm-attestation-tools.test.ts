import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createAk } from '../../src/tpm/attest-client.js'
import { TpmClient } from '../../src/tpm/client.js'
import { TpmWriter } from '../../src/tpm/marshal.js'
import { TPM_ALG, encodeTpm2bPublic } from '../../src/tpm/structures.js'
import { openTransport } from '../../src/tpm/transport.js'
import { makeCredential } from '../../src/tpm/verify/credential.js'
import { verifyQuote } from '../../src/tpm/verify/quote.js'
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const execFileP = promisify(execFile)
const PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16]
const PCR_ARG = `sha256:${PCRS.join(',')}`

/** tpm2_makecredential's output file: magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
function toolsCredentialFile(c: { credentialBlob: Uint8Array; encryptedSecret: Uint8Array }): Uint8Array {
  return new TpmWriter().u32(0xbadcc0de).u32(1).bytes(c.credentialBlob).bytes(c.encryptedSecret).finish()
}

// swtpm serves one data client at a time: every TpmClient is closed before tpm2-tools run.
describe.runIf(requireTools('swtpm', 'swtpm_setup', 'tpm2_quote', 'tpm2_checkquote', 'tpm2_activatecredential'))(
  'TPM verifier cross-checks with tpm2-tools',
  () => {
    let tpm: SwtpmInstance
    let tmp: { dir: string; cleanup: () => void }
    const f = (name: string): string => join(tmp.dir, name)
    const tools = async (cmd: string, ...args: string[]): Promise<string> => {
      const { stdout } = await execFileP(cmd, args, { env: { ...process.env, TPM2TOOLS_TCTI: tpm.tcti }, cwd: tmp.dir })
      return stdout
    }
    const withClient = async <R>(fn: (c: TpmClient) => Promise<R>): Promise<R> => {
      const c = new TpmClient(openTransport(tpm.transportUri))
      try {
        return await fn(c)
      } finally {
        await c.close()
      }
    }

    beforeAll(async () => {
      tpm = await startSwtpm()
      tmp = tempDir('tpmx-')
      await withClient((c) => c.pcrExtend(16, TPM_ALG.SHA256, randomBytes(32)))
      await tools('tpm2_createek', '-c', f('ek.ctx'), '-G', 'rsa', '-u', f('ek.pub'))
      await tools('tpm2_flushcontext', '-t')
      await tools('tpm2_createak', '-C', f('ek.ctx'), '-c', f('ak.ctx'), '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', f('ak.pub'), '-n', f('ak.name'))
      await tools('tpm2_flushcontext', '-t')
      await tools('tpm2_flushcontext', '-s')
    })
    afterAll(async () => {
      await tpm?.stop()
      tmp?.cleanup()
    })

    const activate = async (file: Uint8Array): Promise<Buffer> => {
      writeFileSync(f('cred.in'), file)
      await tools('tpm2_startauthsession', '--policy-session', '-S', f('session.ctx'))
      try {
        await tools('tpm2_policysecret', '-S', f('session.ctx'), '-c', 'e')
        await tools(
          'tpm2_activatecredential',
          '-c',
          f('ak.ctx'),
          '-C',
          f('ek.ctx'),
          '-i',
          f('cred.in'),
          '-o',
          f('cred.out'),
          '-P',
          `session:${f('session.ctx')}`,
        )
      } finally {
        await tools('tpm2_flushcontext', f('session.ctx')).catch(() => undefined)
        await tools('tpm2_flushcontext', '-t')
      }
      return readFileSync(f('cred.out'))
    }

    it('a credential from our makeCredential is activated by tpm2_activatecredential', async () => {
      const secret = randomBytes(32)
      const cred = makeCredential({ ekPublic: readFileSync(f('ek.pub')), akName: readFileSync(f('ak.name')), secret })
      expect((await activate(toolsCredentialFile(cred))).equals(secret)).toBe(true)
    })

    it("a credential for swtpm's high-range P-384 EK (SHA-384, AES-256) is activated by tpm2_activatecredential", async () => {
      const ek = await withClient((c) => c.readPublic(0x81010016))
      const secret = randomBytes(32)
      const cred = makeCredential({ ekPublic: ek.publicBytes, akName: readFileSync(f('ak.name')), secret })
      writeFileSync(f('cred384.in'), toolsCredentialFile(cred))
      try {
        await tools('tpm2_activatecredential', '-c', f('ak.ctx'), '-C', '0x81010016', '-i', f('cred384.in'), '-o', f('cred384.out'), '-p', '', '-P', '')
      } finally {
        await tools('tpm2_flushcontext', '-t')
      }
      expect(readFileSync(f('cred384.out')).equals(secret)).toBe(true)
    })

    it('a credential bound to another AK name fails activation with TPM_RC_INTEGRITY', async () => {
      const name = Buffer.from(readFileSync(f('ak.name')))
      name[5]! ^= 1
      const cred = makeCredential({ ekPublic: readFileSync(f('ek.pub')), akName: name, secret: randomBytes(32) })
      await expect(activate(toolsCredentialFile(cred))).rejects.toThrow(/0x1df|integrity/i)
    })

    it('a quote made by tpm2_quote passes our verifier (and fails for another nonce)', async () => {
      const nonce = randomBytes(32)
      await tools(
        'tpm2_quote',
        '-c',
        f('ak.ctx'),
        '-l',
        PCR_ARG,
        '-q',
        nonce.toString('hex'),
        '-m',
        f('quote.msg'),
        '-s',
        f('quote.sig'),
        '-o',
        f('quote.pcrs'),
        '-g',
        'sha256',
      )
      await tools('tpm2_flushcontext', '-t')
      const read = await withClient((c) => c.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: PCRS }]))
      const values = new Map(read.values.map((v) => [v.pcr, v.digest]))
      const params = {
        akPublic: readFileSync(f('ak.pub')),
        attest: readFileSync(f('quote.msg')),
        signature: readFileSync(f('quote.sig')),
        nonce,
        pcrs: { hash: 'sha256' as const, values },
      }
      expect([...verifyQuote(params).pcrs.keys()]).toEqual(PCRS)
      expect(() => verifyQuote({ ...params, nonce: randomBytes(32) })).toThrow(
        expect.objectContaining({ code: 'ERR_TPM_VERIFICATION_FAILED', message: 'quote nonce does not match the challenge' }),
      )
    })

    it('a quote made by our client passes tpm2_checkquote (and fails for another nonce)', async () => {
      const nonce = randomBytes(32)
      const { akPublic, quote } = await withClient(async (c) =>
        c.withFlush(createAk(c, 'ecc'), async (ak) => ({
          akPublic: encodeTpm2bPublic(ak.publicBytes),
          quote: await c.quote(ak.handle, nonce, [{ hash: TPM_ALG.SHA256, pcrs: PCRS }]),
        })),
      )
      writeFileSync(f('our.pub'), akPublic)
      writeFileSync(f('our.msg'), quote.attest)
      writeFileSync(f('our.sig'), quote.signature)
      await tools('tpm2_pcrread', '-F', 'serialized', '-o', f('our.pcrs'), PCR_ARG)
      const check = (n: Buffer) =>
        tools('tpm2_checkquote', '-u', f('our.pub'), '-m', f('our.msg'), '-s', f('our.sig'), '-f', f('our.pcrs'), '-g', 'sha256', '-q', n.toString('hex'))
      await expect(check(nonce)).resolves.toContain('pcrs:')
      await expect(check(randomBytes(32))).rejects.toThrow()
    })
  },
)
