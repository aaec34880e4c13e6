import { startSwtpm as start, type SwtpmInstance } from '../../src/dev/swtpm.js'
import { tempDir } from './temp.js'

export type { SwtpmInstance }

/** A fresh swtpm in its own temporary directory, removed on stop(). */
export function startSwtpm(opts: { withEkCert?: boolean } = {}): Promise<SwtpmInstance> {
  return start({ dir: tempDir('swtpm-').dir, removeOnStop: true, ...opts })
}
