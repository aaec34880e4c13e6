import { afterAll, beforeAll, describe } from 'vitest'
import { openPostgresDataStore } from '../../../../../src/server/datastore/postgres/index.js'
import { dataStoreConformance } from '../../../../conformance/datastore.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster, type PostgresDatabase } from '../../../../helpers/postgres-cluster.js'

describe.runIf(requirePostgres())('postgres datastore', () => {
  let cluster: PostgresCluster
  // A database per store the suite opens, emptied (TRUNCATE) and reused once that store is done: creating one takes ~100 ms.
  const idle: PostgresDatabase[] = []
  async function freshDatabase(): Promise<PostgresDatabase> {
    const db = idle.pop()
    if (db === undefined) return cluster.createDatabase('conf')
    const tables = await cluster.sql<{ t: string }>(
      db.name,
      "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('schema_migrations', 'change_counter')",
    )
    await cluster.sql(db.name, `TRUNCATE ${tables.map((r) => r.t).join(', ')} RESTART IDENTITY; UPDATE change_counter SET last = 0, pruned_through = 0`)
    return db
  }

  beforeAll(async () => {
    cluster = await startPostgresCluster()
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  dataStoreConformance('postgres', {
    persistent: true,
    open: async ({ clock }) => {
      const db = await freshDatabase()
      const open = () => openPostgresDataStore({ connectionString: db.connectionString, password: cluster.password, clock })
      const handle = { ds: await open() }
      return {
        ds: handle.ds,
        reopen: async () => {
          await handle.ds.close()
          handle.ds = await open()
          return handle.ds
        },
        cleanup: async () => {
          idle.push(db)
        },
      }
    },
  })
})
