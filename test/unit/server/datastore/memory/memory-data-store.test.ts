import { createMemoryDataStore } from '../../../../../src/server/datastore/index.js'
import { dataStoreConformance } from '../../../../conformance/datastore.js'

dataStoreConformance('memory', {
  open: async ({ clock }) => ({ ds: createMemoryDataStore({ clock }), cleanup: async () => {} }),
})
