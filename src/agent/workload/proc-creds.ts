/**
 * The credentials of a process as procfs shows them now (`/proc/<pid>/status`
 * `Uid:`, `Gid:` and `Groups:` lines), to compare with what the kernel
 * recorded when the process connected (SO_PEERCRED, SO_PEERGROUPS).
 *
 * The Workload API identifies a caller by the credentials of its connection,
 * never by a later read of `/proc`: a process can change its ids after it
 * connected (an exec of a setuid binary, `setuid()`), and the pid of the
 * connection names only the process that connected, not whoever holds the
 * socket now (a forked child). The status read here only detects such a
 * change, so that the call is refused instead of answered with either view.
 */
/** Real, effective, saved and filesystem ids, and the supplementary groups. */
export interface ProcCreds {
  readonly uids: readonly number[]
  readonly gids: readonly number[]
  readonly groups: readonly number[]
  /** The three lines as read (after the name), for a cheap comparison with a later read. */
  readonly lines: readonly [string, string, string]
}

const UID = Buffer.from('\nUid:', 'latin1')
const GID = Buffer.from('\nGid:', 'latin1')
const GROUPS = Buffer.from('\nGroups:', 'latin1')

/** The rest of the line that starts with `key` (a `\n` then the name), or undefined. */
function lineAfter(buf: Buffer, end: number, key: Buffer): string | undefined {
  const i = buf.indexOf(key)
  if (i < 0 || i + key.length > end) return undefined
  const from = i + key.length
  let to = buf.indexOf(0x0a, from)
  if (to < 0 || to > end) to = end
  return buf.toString('latin1', from, to)
}

/** Decimal ids separated by blanks; undefined when anything else is there. */
function ids(line: string): number[] | undefined {
  const out: number[] = []
  for (const part of line.split(/[ \t]+/)) {
    if (part === '') continue
    if (!/^[0-9]{1,10}$/.test(part)) return undefined
    const v = Number(part)
    if (v > 0xffffffff) return undefined
    out.push(v)
  }
  return out
}

/**
 * Parses the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/<pid>/status`
 * text (`buf` up to `end`). Undefined when a line is missing or malformed
 * (`Uid:`/`Gid:` must carry four ids each): the caller then refuses.
 */
export function parseProcCreds(buf: Buffer, end = buf.length): ProcCreds | undefined {
  const u = lineAfter(buf, end, UID)
  const g = lineAfter(buf, end, GID)
  const gr = lineAfter(buf, end, GROUPS)
  if (u === undefined || g === undefined || gr === undefined) return undefined
  const uids = ids(u)
  const gids = ids(g)
  const groups = ids(gr)
  if (uids?.length !== 4 || gids?.length !== 4 || groups === undefined) return undefined
  return { uids, gids, groups, lines: [u, g, gr] }
}

/** Whether a later status text still has exactly the lines of `was` (bytes compared, nothing parsed or copied). */
export function sameProcCreds(was: ProcCreds, buf: Buffer, end = buf.length): boolean {
  return sameLine(buf, end, UID, was.lines[0]) && sameLine(buf, end, GID, was.lines[1]) && sameLine(buf, end, GROUPS, was.lines[2])
}

/** Whether the line that starts with `key` holds exactly `value` (latin1). */
function sameLine(buf: Buffer, end: number, key: Buffer, value: string): boolean {
  const i = buf.indexOf(key)
  if (i < 0 || i + key.length > end) return false
  const from = i + key.length
  let to = buf.indexOf(0x0a, from)
  if (to < 0 || to > end) to = end
  if (to - from !== value.length) return false
  for (let k = 0; k < value.length; k++) if (buf[from + k] !== value.charCodeAt(k)) return false
  return true
}
