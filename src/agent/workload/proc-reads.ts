/**
 * Marks of workload attestations, by caller pid, for the Workload API's
 * re-check (`peer.ts`).
 *
 * An attestor may read `/proc/<pid>/…` (the unix attestor reads the `exe`
 * link and hashes the executable). The kernel announces an `execve` (and a
 * change of ids) on its process events only after the change, still inside
 * the system call, so such a read can see a new executable a few
 * microseconds before its event is queued. The re-check therefore reads
 * `/proc` in full after every attestation, whatever the events say: each
 * attestation bumps its pid's mark when its reads are done, and the re-check
 * compares the mark with the one it saw at its last full read.
 *
 * Marks live in a fixed table indexed by pid modulo its size: two pids that
 * share a slot only cause an extra full read, never a skipped one, and the
 * table never grows.
 */
const SLOTS = 4096

const marks = new Float64Array(SLOTS)

/** Called once an attestation of `pid` has done its reads of `/proc/<pid>` (before its selectors are used). */
export function noteProcReads(pid: number): void {
  marks[pid & (SLOTS - 1)]! += 1
}

/** The current mark of `pid`'s slot. */
export function procReadsMark(pid: number): number {
  return marks[pid & (SLOTS - 1)]!
}
