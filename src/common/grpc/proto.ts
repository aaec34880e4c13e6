import { loadPackageDefinition, type GrpcObject } from '@grpc/grpc-js'
import { loadSync, type Options } from '@grpc/proto-loader'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Absolute path of the repository's proto/ directory (WARRANT_PROTO_DIR overrides it, for bundled builds). */
export const PROTO_DIR = process.env.WARRANT_PROTO_DIR || join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'proto')

export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
}

const cache = new Map<string, GrpcObject>()

/** Loads a proto file relative to proto/ (cached per process). */
export function loadProto(relPath: string): GrpcObject {
  let obj = cache.get(relPath)
  if (!obj) {
    obj = loadPackageDefinition(loadSync(join(PROTO_DIR, relPath), PROTO_LOADER_OPTIONS))
    cache.set(relPath, obj)
  }
  return obj
}
