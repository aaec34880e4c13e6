import { generateKeyPairSync, sign, verify } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  addSignatures,
  checkpointText,
  ecdsaNoteSigner,
  openCheckpoint,
  p1363ToDer,
  parseCheckpointInsecure,
  parseVerifierKey,
  signCheckpoint,
  verifierKey,
} from '../../../src/audit/checkpoint.js'
import { MemoryKeyManager } from '../../../src/keymanager/index.js'

const ORIGIN = 'example.org/warrant/audit'
const root = Buffer.alloc(32, 0xab)

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code ?? (err as Error).name
  }
  return undefined
}

async function keyPair(name = ORIGIN) {
  const km = new MemoryKeyManager()
  const key = await km.generateKey('audit', 'ec-p256')
  return { key, signer: ecdsaNoteSigner(name, key), vkey: verifierKey(name, key.publicKey) }
}

describe('checkpoints (C2SP tlog-checkpoint, signed-note type 0x02)', () => {
  it('writes the note text exactly: origin, decimal size, base64 root, each ending in a newline', () => {
    expect(checkpointText({ origin: ORIGIN, size: 20852163, rootHash: root, extensions: [] })).toBe(`${ORIGIN}\n20852163\n${root.toString('base64')}\n`)
  })

  it('signs with a KeyManager key and verifies with the verifier key alone', async () => {
    const { signer, vkey } = await keyPair()
    const note = await signCheckpoint({ origin: ORIGIN, size: 5, rootHash: root, extensions: [] }, [signer])
    const [text, sig] = note.split('\n\n') as [string, string]
    expect(`${text}\n`).toBe(checkpointText({ origin: ORIGIN, size: 5, rootHash: root, extensions: [] }))
    expect(sig).toMatch(new RegExp(`^— ${ORIGIN} [A-Za-z0-9+/]+=*\\n$`))
    // the signature line: 4-byte key ID (SHA-256 of the DER SPKI), then an ASN.1 DER ECDSA signature
    const raw = Buffer.from(sig.split(' ')[2]!.trim(), 'base64')
    expect(raw.readUInt32BE(0)).toBe(signer.keyId)
    expect(raw[4]).toBe(0x30)
    expect(vkey).toMatch(new RegExp(`^${ORIGIN}\\+${signer.keyId.toString(16).padStart(8, '0')}\\+AjBZ`)) // 0x02, then the DER SPKI's SEQUENCE
    const cp = openCheckpoint(note, parseVerifierKey(vkey))
    expect(cp).toEqual({ origin: ORIGIN, size: 5, rootHash: root, extensions: [] })
  })

  it('refuses a note signed by another key, a changed body and a corrupted signature', async () => {
    const a = await keyPair()
    const b = await keyPair()
    const note = await signCheckpoint({ origin: ORIGIN, size: 5, rootHash: root, extensions: [] }, [a.signer])
    expect(code(() => openCheckpoint(note, parseVerifierKey(b.vkey)))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
    expect(code(() => openCheckpoint(note.replace('\n5\n', '\n6\n'), parseVerifierKey(a.vkey)))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
    const line = note.split('\n\n')[1]!
    const raw = Buffer.from(line.split(' ')[2]!.trim(), 'base64')
    raw[raw.length - 3]! ^= 1
    const bent = `${note.split('\n\n')[0]}\n\n— ${ORIGIN} ${raw.toString('base64')}\n`
    expect(code(() => openCheckpoint(bent, parseVerifierKey(a.vkey)))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
  })

  it('ignores signatures of unknown keys (a witness cosignature) and accepts the known one', async () => {
    const a = await keyPair()
    const w = await keyPair('witness.example/w1')
    const note = await signCheckpoint({ origin: ORIGIN, size: 9, rootHash: root, extensions: [] }, [a.signer])
    const witnessLine = (await signCheckpoint({ origin: ORIGIN, size: 9, rootHash: root, extensions: [] }, [w.signer])).split('\n\n')[1]!
    const cosigned = addSignatures(note, [witnessLine])
    expect(openCheckpoint(cosigned, parseVerifierKey(a.vkey)).size).toBe(9)
    expect(openCheckpoint(cosigned, parseVerifierKey(w.vkey)).size).toBe(9)
  })

  it.each([
    ['no signature block', `${ORIGIN}\n1\n${root.toString('base64')}\n`],
    ['a leading zero in the size', `${ORIGIN}\n01\n${root.toString('base64')}\n\n— ${ORIGIN} AAAAAAAA\n`],
    ['a short root', `${ORIGIN}\n1\nAAAA\n\n— ${ORIGIN} AAAAAAAA\n`],
    ['a control character', `${ORIGIN}\t\n1\n${root.toString('base64')}\n\n— ${ORIGIN} AAAAAAAA\n`],
    ['a malformed signature line', `${ORIGIN}\n1\n${root.toString('base64')}\n\n- ${ORIGIN} AAAAAAAA\n`],
  ])('refuses a note with %s', (_w, note) => {
    expect(code(() => parseCheckpointInsecure(note))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
  })

  it('parses verifier keys strictly: wrong key ID, wrong type, not P-256', async () => {
    const { vkey, key } = await keyPair()
    const [name, id, b64] = [vkey.slice(0, vkey.indexOf('+')), vkey.split('+')[1]!, vkey.slice(vkey.indexOf('+', vkey.indexOf('+') + 1) + 1)]
    expect(parseVerifierKey(vkey).name).toBe(name)
    expect(code(() => parseVerifierKey(`${name}+${id === '00000000' ? '00000001' : '00000000'}+${b64}`))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
    const typed = Buffer.from(b64, 'base64')
    typed[0] = 0x01
    expect(code(() => parseVerifierKey(`${name}+${id}+${typed.toString('base64')}`))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
    expect(code(() => parseVerifierKey('nothing'))).toBe('ERR_AUDIT_CHECKPOINT_INVALID')
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey
    expect(() => verifierKey(ORIGIN, rsa)).toThrow(TypeError)
    expect(() => verifierKey('a name', key.publicKey)).toThrow(TypeError)
  })

  it('re-encodes P1363 signatures as DER that node:crypto verifies, including high-bit and leading-zero halves', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    for (let i = 0; i < 200; i++) {
      const msg = Buffer.from(`m${i}`)
      const p1363 = sign('sha256', msg, { key: privateKey, dsaEncoding: 'ieee-p1363' })
      expect(verify('sha256', msg, { key: publicKey, dsaEncoding: 'der' }, p1363ToDer(p1363))).toBe(true)
    }
    const zeros = Buffer.concat([Buffer.alloc(31), Buffer.from([0x01]), Buffer.from([0x80]), Buffer.alloc(31)])
    expect(p1363ToDer(zeros).toString('hex')).toBe(`3026020101022100${'80'}${'00'.repeat(31)}`)
  })
})
