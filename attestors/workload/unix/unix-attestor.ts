import { createHash } from 'node:crypto'
import { open, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { F, type Logger } from '../../../src/common/log/logger.js'
import type { CallOpts, WorkloadAttestor } from '../../../src/plugin/contracts.js'
import type { UnixAttestorConfig } from './config.js'
import { NameDb } from './name-db.js'

export interface UnixAttestorOptions extends UnixAttestorConfig {
  log: Logger
  /** For tests: where `/proc`, `/etc/passwd` and `/etc/group` are. */
  procRoot?: string
  passwdPath?: string
  groupPath?: string
}

/** The ids of a process from `/proc/<pid>/status`. */
export interface ProcessIds {
  uid: number
  gid: number
  groups: number[]
}

/**
 * Parses the `Uid:`, `Gid:` and `Groups:` lines of `/proc/<pid>/status`.
 * `Uid:`/`Gid:` list real, effective, saved and filesystem ids; like SPIRE
 * (which takes gopsutil's `Uids()[1]`), we use the **effective** id, the one
 * the kernel checks permissions against, falling back to the first field if
 * only one is present.
 */
export function parseProcStatus(text: string): ProcessIds {
  const field = (name: string): string[] | undefined => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}:`))
    if (line === undefined) return undefined
    return line.slice(name.length + 1).trim().split(/\s+/).filter((s) => s !== '')
  }
  const pick = (name: string): number => {
    const ids = field(name)
    const v = ids?.[1] ?? ids?.[0]
    if (v === undefined || !/^\d+$/.test(v)) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: no ${name} line in process status`)
    }
    return Number(v)
  }
  const groups = (field('Groups') ?? []).filter((g) => /^\d+$/.test(g)).map(Number)
  return { uid: pick('Uid'), gid: pick('Gid'), groups }
}

/**
 * Linux process attestor. Selector values (the catalog adds `unix:`):
 * `uid:<n>`, `user:<name>`, `gid:<n>`, `group:<name>`,
 * `supplementary_gid:<n>`, `supplementary_group:<name>`, and with
 * discover_workload_path `path:<exe>` and `sha256:<hex>`.
 */
export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly #cfg: UnixAttestorConfig
  readonly #log: Logger
  readonly #procRoot: string
  readonly #users: NameDb
  readonly #groups: NameDb

  constructor(opts: UnixAttestorOptions) {
    this.#cfg = { discoverWorkloadPath: opts.discoverWorkloadPath, workloadSizeLimit: opts.workloadSizeLimit }
    this.#log = opts.log
    this.#procRoot = opts.procRoot ?? '/proc'
    this.#users = new NameDb(opts.passwdPath ?? '/etc/passwd')
    this.#groups = new NameDb(opts.groupPath ?? '/etc/group')
  }

  async attest(pid: number, opts: CallOpts = {}): Promise<string[]> {
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`invalid pid ${pid}`)
    const procDir = join(this.#procRoot, String(pid))
    let status: string
    try {
      status = await readFile(join(procDir, 'status'), { encoding: 'utf8', ...(opts.signal ? { signal: opts.signal } : {}) })
    } catch (cause) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot read status of process ${pid}`, { cause, details: { pid } })
    }
    const ids = parseProcStatus(status)
    const out: string[] = []
    const add = (v: string) => {
      if (!out.includes(v)) out.push(v)
    }

    add(`uid:${ids.uid}`)
    const user = await this.#users.lookup(ids.uid)
    if (user !== undefined) add(`user:${user}`)
    add(`gid:${ids.gid}`)
    const group = await this.#groups.lookup(ids.gid)
    if (group !== undefined) add(`group:${group}`)
    for (const g of ids.groups) {
      add(`supplementary_gid:${g}`)
      const name = await this.#groups.lookup(g)
      if (name !== undefined) add(`supplementary_group:${name}`)
    }

    if (this.#cfg.discoverWorkloadPath) {
      const exeLink = join(procDir, 'exe')
      let path: string
      try {
        path = await readlink(exeLink)
      } catch (cause) {
        throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot read executable path of process ${pid}`, {
          cause,
          details: { pid },
        })
      }
      add(`path:${path}`)
      const digest = await this.#hash(exeLink, pid, opts)
      if (digest !== undefined) add(`sha256:${digest}`)
    }
    return out
  }

  /**
   * SHA-256 of the running binary, read through `/proc/<pid>/exe` (the file
   * actually mapped, even if the path was replaced since). Undefined when
   * hashing is off (-1) or the binary exceeds the size limit.
   */
  async #hash(exeLink: string, pid: number, opts: CallOpts): Promise<string | undefined> {
    const limit = this.#cfg.workloadSizeLimit
    if (limit < 0) return undefined
    let fh
    try {
      fh = await open(exeLink, 'r')
    } catch (cause) {
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `unix: cannot open executable of process ${pid}`, { cause, details: { pid } })
    }
    try {
      const { size } = await fh.stat()
      if (limit > 0 && size > limit) {
        this.#log.warn({ [F.PID]: pid, size, limit }, 'Workload binary exceeds workload_size_limit; sha256 selector skipped')
        return undefined
      }
      const h = createHash('sha256')
      const buf = Buffer.allocUnsafe(1 << 20)
      let total = 0
      for (;;) {
        opts.signal?.throwIfAborted()
        const { bytesRead } = await fh.read(buf, 0, buf.length, null)
        if (bytesRead === 0) break
        total += bytesRead
        if (limit > 0 && total > limit) {
          this.#log.warn({ [F.PID]: pid, limit }, 'Workload binary grew past workload_size_limit; sha256 selector skipped')
          return undefined
        }
        h.update(buf.subarray(0, bytesRead))
      }
      return h.digest('hex')
    } finally {
      await fh.close()
    }
  }
}
