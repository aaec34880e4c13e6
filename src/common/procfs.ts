/**
 * Whole-file reads of procfs files kept open (`/proc/<pid>/stat`, `status`):
 * each read starts at offset 0, where procfs generates the text afresh, into
 * one reused buffer that grows as needed. Synchronous: procfs never waits on
 * a disk, and a thread-pool round trip would cost more than the read.
 */
import { readSync } from 'node:fs'

export class ProcFileReader {
  #buf: Buffer

  constructor(initialBytes = 1024) {
    this.#buf = Buffer.allocUnsafe(initialBytes)
  }

  /** The buffer the last `read` filled (valid until the next `read`). */
  get buffer(): Buffer {
    return this.#buf
  }

  /**
   * Reads the file open as `fd` from offset 0 to its end; returns the number of
   * bytes now at the start of `buffer`. A read that does not fill the space it
   * was given has reached the end (procfs hands out a generated file whole), so
   * no further read is made to see 0. Throws the read error (ESRCH: the process
   * the file was opened for is gone).
   */
  read(fd: number): number {
    let n = 0
    for (;;) {
      if (n === this.#buf.length) {
        const bigger = Buffer.allocUnsafe(this.#buf.length * 2)
        this.#buf.copy(bigger, 0, 0, n)
        this.#buf = bigger
      }
      const space = this.#buf.length - n
      const r = readSync(fd, this.#buf, n, space, n)
      n += r
      if (r < space) return n
    }
  }
}
