import { join } from 'node:path'
import { openSqliteDataStore } from '../../../../../src/server/datastore/index.js'
import { dataStoreConformance } from '../../../../conformance/datastore.js'
import { tempDir } from '../../../../helpers/temp.js'

dataStoreConformance('sqlite (file)', {
  persistent: true,
  open: async ({ clock }) => {
    const { dir, cleanup } = tempDir('w-ds-')
    const path = join(dir, 'data', 'datastore.sqlite3')
    const handle = { ds: await openSqliteDataStore({ path, clock }) }
    return {
      ds: handle.ds,
      reopen: async () => {
        await handle.ds.close()
        handle.ds = await openSqliteDataStore({ path, clock })
        return handle.ds
      },
      cleanup: async () => cleanup(),
    }
  },
})

dataStoreConformance('sqlite (:memory:)', {
  open: async ({ clock }) => ({ ds: await openSqliteDataStore({ path: ':memory:', clock }), cleanup: async () => {} }),
})
