/**
 * hsm_svid_issue_vs_raw_pkcs11: X.509-SVIDs issued per second with the CA key
 * inside SoftHSM2 (Pkcs11KeyManager, session pool, `createX509Svid` signing
 * through the ManagedKey), against a raw pkcs11js loop (C_SignInit + C_Sign,
 * CKM_ECDSA over a SHA-256 digest) with the same key on the same token, in the
 * same run. Also prints hsm_managed_sign_vs_raw_pkcs11 (ManagedKey.sign alone).
 *
 * `npm run bench -- hsm`
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkcs11js from 'pkcs11js'
import { opsPerSecond, opsPerSecondSync, percentile, report } from './lib.js'
import { findSoftHsmModule, Pkcs11KeyManager, provisionSoftHsm } from '../src/keymanager/pkcs11/index.js'
import { createCaCertificate, createX509Svid } from '../src/spiffe/x509-svid/index.js'
import { SpiffeId } from '../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'

const POOL_SIZE = 4
const ROUNDS = 5
const ROUND_MS = 1500

export async function run(_args: string[]): Promise<void> {
  if (findSoftHsmModule() === undefined) {
    process.stderr.write('hsm: SoftHSM2 is not installed (libsofthsm2.so not found); benchmark not run\n')
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'wbench-hsm-'))
  let km: Pkcs11KeyManager | undefined
  try {
    const hsm = await provisionSoftHsm(dir)
    // SoftHSM reads its config at C_Initialize: set before the first open in this process.
    process.env.SOFTHSM2_CONF = hsm.confPath
    const pin = readFileSync(hsm.pinFile, 'utf8').trim()
    km = await Pkcs11KeyManager.open({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin, session_pool_size: POOL_SIZE })
    const ca = await km.generateKey('bench-ca', 'ec-p256')

    const td = TrustDomain.fromString('bench.example')
    const now = Date.now()
    const caCert = await createCaCertificate({
      trustDomain: td,
      publicKey: ca.publicKey,
      signer: ca,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 24 * 3600_000),
    })
    // Workload keys come from CSRs in real life: generate a few up front, outside the measurement.
    const workloadKeys: KeyObject[] = Array.from({ length: 32 }, () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)
    const ids = Array.from({ length: 32 }, (_, i) => SpiffeId.fromString(`spiffe://bench.example/agent/${i}/workload`))
    const notAfter = new Date(now + 3600_000)
    let n = 0
    const issueOne = () => {
      const i = n++ & 31
      return createX509Svid({ spiffeId: ids[i]!, publicKey: workloadKeys[i]!, signer: ca, issuer: { certificate: caCert }, notAfter })
    }
    // `POOL_SIZE` issuances in flight at a time, one per pooled session.
    const issueBatch = () => Promise.all(Array.from({ length: POOL_SIZE }, issueOne))
    const tbsLike = randomBytes(420)
    const signBatch = () => Promise.all(Array.from({ length: POOL_SIZE }, () => ca.sign(tbsLike, 'ES256')))

    // Raw pkcs11js baseline: its own handle on the already-initialized module, its own session, the same key.
    const p = new pkcs11js.PKCS11()
    p.load(hsm.modulePath)
    try {
      p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
    } catch (err) {
      if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
    }
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === hsm.tokenLabel)
    if (slot === undefined) throw new Error('bench token not found')
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION)
    try {
      p.C_Login(session, pkcs11js.CKU_USER, pin)
    } catch (err) {
      if ((err as Error).message !== 'CKR_USER_ALREADY_LOGGED_IN') throw err
    }
    p.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: 'warrant-bench-ca' },
    ])
    const [priv] = p.C_FindObjects(session, 1)
    p.C_FindObjectsFinal(session)
    if (priv === undefined) throw new Error('bench CA key not found')
    const out = Buffer.alloc(64)
    const rawSign = () => {
      const digest = createHash('sha256').update(tbsLike).digest()
      p.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, priv)
      p.C_Sign(session, digest, out)
    }

    // Interleaved rounds, median of each: the three figures see the same machine load.
    const rawRuns: number[] = []
    const svidRuns: number[] = []
    const signRuns: number[] = []
    for (let r = 0; r < ROUNDS; r++) {
      rawRuns.push(opsPerSecondSync(rawSign, { ms: ROUND_MS, warmupMs: 200 }))
      svidRuns.push(await opsPerSecond(issueBatch, { ms: ROUND_MS, warmupMs: 200, batch: POOL_SIZE }))
      signRuns.push(await opsPerSecond(signBatch, { ms: ROUND_MS, warmupMs: 200, batch: POOL_SIZE }))
    }
    p.C_CloseSession(session)
    const raw = percentile(rawRuns, 50)
    const svids = percentile(svidRuns, 50)
    const signs = percentile(signRuns, 50)

    report('hsm_svid_issue_vs_raw_pkcs11', svids, raw, 'ops/s', { pool_size: POOL_SIZE, key: 'ec-p256', module: 'softhsm2' })
    report('hsm_managed_sign_vs_raw_pkcs11', signs, raw, 'ops/s', { pool_size: POOL_SIZE, key: 'ec-p256', module: 'softhsm2' })
  } finally {
    await km?.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
