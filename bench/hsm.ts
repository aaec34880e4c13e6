/**
 * hsm_svid_issue_vs_raw_pkcs11: X.509-SVIDs issued per second with the CA key
 * inside SoftHSM2 (Pkcs11KeyManager, pool of POOL_SIZE sessions, POOL_SIZE
 * `createX509Svid` calls in flight signing through the ManagedKey), against
 * raw pkcs11js with the same concurrency: POOL_SIZE logged-in sessions of its
 * own, POOL_SIZE signatures in flight per batch, one per session, each a
 * C_SignInit + C_Sign (CKM_ECDSA over a SHA-256 digest computed per call, a
 * fresh output buffer per call) with the same key on the same token, in the
 * same run. The baseline calls C_Sign the way the key manager does: a key
 * manager with the default `sign_mode = "auto"` is warmed up, the mode it
 * settles on (sync C_Sign on the calling thread, or C_SignAsync on the libuv
 * pool; auto turns async for good once signing is slow, as on a loaded
 * machine) is printed as `sign_mode`, and the first two figures measure a key
 * manager pinned to that mode against the baseline in the same mode.
 * hsm_managed_sign_async_vs_raw_pkcs11_async forces async calls on both sides.
 * Also prints hsm_managed_sign_vs_raw_pkcs11 (ManagedKey.sign alone).
 *
 * `npm run bench -- hsm`
 */
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pkcs11js from 'pkcs11js'
import { opsPerSecond, percentile, report } from './lib.js'
import type { ManagedKey } from '../src/keymanager/key-manager.js'
import { Pkcs11KeyManager } from '../src/keymanager/pkcs11/index.js'
import { findSoftHsmModule, provisionSoftHsm } from '../src/dev/softhsm.js'
import { createCaCertificate, createX509Svid } from '../src/spiffe/x509-svid/index.js'
import { SpiffeId } from '../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'

const POOL_SIZE = 4
const ROUNDS = 20
const ROUND_MS = 300

export async function run(_args: string[]): Promise<void> {
  if (findSoftHsmModule() === undefined) {
    process.stderr.write('hsm: SoftHSM2 is not installed (libsofthsm2.so not found); benchmark not run\n')
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'wbench-hsm-'))
  let km: Pkcs11KeyManager | undefined
  let kmAsync: Pkcs11KeyManager | undefined
  let kmSync: Pkcs11KeyManager | undefined
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
    const issueOne = (signer: ManagedKey) => {
      const i = n++ & 31
      return createX509Svid({ spiffeId: ids[i]!, publicKey: workloadKeys[i]!, signer, issuer: { certificate: caCert }, notAfter })
    }
    // `POOL_SIZE` issuances in flight at a time, one per pooled session.
    const issueBatchWith = (signer: ManagedKey) => () => Promise.all(Array.from({ length: POOL_SIZE }, () => issueOne(signer)))
    const tbsLike = randomBytes(420)
    const signBatchWith = (signer: ManagedKey) => () => Promise.all(Array.from({ length: POOL_SIZE }, () => signer.sign(tbsLike, 'ES256')))
    const signBatch = signBatchWith(ca)

    // A second key manager on the same token that always calls C_SignAsync (sign_mode = "async").
    kmAsync = await Pkcs11KeyManager.open({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin, session_pool_size: POOL_SIZE, sign_mode: 'async' })
    const caAsync = await kmAsync.getKey('bench-ca')
    const signBatchAsync = signBatchWith(caAsync)

    // Raw pkcs11js baseline: its own handle on the already-initialized module, POOL_SIZE sessions of its own, the same key.
    const p = new pkcs11js.PKCS11()
    p.load(hsm.modulePath)
    try {
      p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
    } catch (err) {
      if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
    }
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === hsm.tokenLabel)
    if (slot === undefined) throw new Error('bench token not found')
    const sessions = Array.from({ length: POOL_SIZE }, () => p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION))
    try {
      p.C_Login(sessions[0]!, pkcs11js.CKU_USER, pin)
    } catch (err) {
      if ((err as Error).message !== 'CKR_USER_ALREADY_LOGGED_IN') throw err
    }
    p.C_FindObjectsInit(sessions[0]!, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: 'warrant-bench-ca' },
    ])
    const [priv] = p.C_FindObjects(sessions[0]!, 1)
    p.C_FindObjectsFinal(sessions[0]!)
    if (priv === undefined) throw new Error('bench CA key not found')
    const mech = { mechanism: pkcs11js.CKM_ECDSA }
    // One batch = POOL_SIZE signatures in flight, one per session, awaited together (as signBatch / issueBatch).
    const rawBatchSync = () =>
      Promise.all(
        sessions.map(async (session) => {
          const digest = createHash('sha256').update(tbsLike).digest()
          p.C_SignInit(session, mech, priv)
          return p.C_Sign(session, digest, Buffer.alloc(64))
        }),
      )
    const rawBatchAsync = () =>
      Promise.all(
        sessions.map((session) => {
          const digest = createHash('sha256').update(tbsLike).digest()
          p.C_SignInit(session, mech, priv)
          return p.C_SignAsync(session, digest, Buffer.alloc(64))
        }),
      )

    // Warm the auto key manager up so that its sync/async choice for ec-p256 is made before measuring. `auto`
    // switches to async for good when signing gets slow (it does on a loaded machine), so the measured key
    // manager is one pinned to the mode auto chose: the figures then compare the same kind of call throughout.
    await opsPerSecond(signBatch, { ms: 500, warmupMs: 100, batch: POOL_SIZE })
    const mode: 'sync' | 'async' = km._signTimer('ec-p256')?.async === false ? 'sync' : 'async'
    if (mode === 'sync')
      kmSync = await Pkcs11KeyManager.open({ module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin, session_pool_size: POOL_SIZE, sign_mode: 'sync' })
    const caMain = mode === 'sync' ? await kmSync!.getKey('bench-ca') : caAsync
    const issueBatch = issueBatchWith(caMain)
    const signBatchMain = signBatchWith(caMain)
    const rawBatch = mode === 'sync' ? rawBatchSync : rawBatchAsync

    // Interleaved rounds, median of each: the figures see the same machine load.
    const opts = { ms: ROUND_MS, warmupMs: 50, batch: POOL_SIZE }
    const rawRuns: number[] = []
    const svidRuns: number[] = []
    const signRuns: number[] = []
    const rawAsyncRuns: number[] = []
    const signAsyncRuns: number[] = []
    // Many short rounds, the order reversed every other round, so that load from elsewhere on a shared
    // machine falls on both sides alike.
    const steps: [() => Promise<unknown>, number[]][] = [
      [rawBatch, rawRuns],
      [issueBatch, svidRuns],
      [signBatchMain, signRuns],
      // When auto chose async, the forced-async pair is the pair above: not measured twice.
      ...(mode === 'sync'
        ? ([
            [rawBatchAsync, rawAsyncRuns],
            [signBatchAsync, signAsyncRuns],
          ] as [() => Promise<unknown>, number[]][])
        : []),
    ]
    for (let r = 0; r < ROUNDS; r++) {
      for (const [fn, runs] of r % 2 === 0 ? steps : [...steps].reverse()) runs.push(await opsPerSecond(fn, opts))
    }
    for (const s of sessions) p.C_CloseSession(s)
    const raw = percentile(rawRuns, 50)
    const common = { pool_size: POOL_SIZE, in_flight: POOL_SIZE, baseline_sessions: POOL_SIZE, key: 'ec-p256', module: 'softhsm2' }

    report('hsm_svid_issue_vs_raw_pkcs11', percentile(svidRuns, 50), raw, 'ops/s', {
      ...common,
      sign_mode: `${mode} (auto's choice)`,
      baseline_sign: mode === 'sync' ? 'C_Sign' : 'C_SignAsync',
    })
    report('hsm_managed_sign_vs_raw_pkcs11', percentile(signRuns, 50), raw, 'ops/s', {
      ...common,
      sign_mode: `${mode} (auto's choice)`,
      baseline_sign: mode === 'sync' ? 'C_Sign' : 'C_SignAsync',
    })
    const asyncPair = mode === 'sync' ? { ours: signAsyncRuns, raw: rawAsyncRuns } : { ours: signRuns, raw: rawRuns }
    report('hsm_managed_sign_async_vs_raw_pkcs11_async', percentile(asyncPair.ours, 50), percentile(asyncPair.raw, 50), 'ops/s', {
      ...common,
      sign_mode: 'async',
      baseline_sign: 'C_SignAsync',
    })
  } finally {
    await kmSync?.close()
    await kmAsync?.close()
    await km?.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
