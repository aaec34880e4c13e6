import { makeGenericClientConstructor, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js'
import protobuf from 'protobufjs'
import { isAbsolute, join } from 'node:path'
import { PROTO_DIR } from './proto.js'

/**
 * Direct protobuf codecs for a service's hot methods.
 *
 * @grpc/proto-loader serializes through `fromObject` (a converted copy of the
 * whole message, int64 strings parsed into Longs) and deserializes through
 * `toObject` (another copy, every int64 formatted as a string). For a
 * BatchNewX509SVID of 100 leaves that is two extra object trees per call on
 * each side. A direct codec encodes the handler's plain object as it is and
 * hands over protobufjs' decoded message as it is, so the code on both ends
 * of such a method must use the wire's own types:
 *
 * - encoding: int64 fields as numbers (or Longs), bytes as Uint8Array, enums
 *   as numbers, nested messages as plain objects; unknown keys are ignored;
 * - decoding: unset scalars read their default from the message's prototype,
 *   an unset message field is null, an unset bytes field is an empty array (not
 *   a Buffer), int64 fields are Longs (see `int64`), enums are numbers.
 *
 * The bytes on the wire are the same as proto-loader's.
 */

const roots = new Map<string, protobuf.Root>()

/** protobufjs types of a proto file under proto/ (keepCase, as PROTO_LOADER_OPTIONS), cached per process. */
export function protoTypes(relPath: string): protobuf.Root {
  let root = roots.get(relPath)
  if (!root) {
    root = new protobuf.Root()
    root.resolvePath = (_origin, target) => (isAbsolute(target) ? target : join(PROTO_DIR, target))
    root.loadSync(relPath, { keepCase: true })
    root.resolveAll()
    roots.set(relPath, root)
  }
  return root
}

/** Which side of a method gets the direct codec: the server (decodes requests, encodes responses) or the client. */
export type DirectSide = 'server' | 'client'

/**
 * A copy of `service` whose `methods` use direct codecs on `side` (the others
 * keep proto-loader's). Throws if a method or its message types are unknown.
 */
export function withDirectCodecs(service: ServiceDefinition, root: protobuf.Root, methods: readonly string[], side: DirectSide): ServiceDefinition {
  const out: Record<string, unknown> = { ...service }
  for (const name of methods) {
    const m = service[name]
    if (!m) throw new TypeError(`withDirectCodecs: no method ${name}`)
    const req = root.lookupType(fullName(m.path, root, 'request', name))
    const res = root.lookupType(fullName(m.path, root, 'response', name))
    const encode =
      (t: protobuf.Type) =>
      (value: unknown): Buffer =>
        t.encode(value as protobuf.Message).finish() as Buffer
    const decode =
      (t: protobuf.Type) =>
      (bytes: Buffer): unknown =>
        t.decode(bytes)
    out[name] =
      side === 'server'
        ? { ...m, requestDeserialize: decode(req), responseSerialize: encode(res) }
        : { ...m, requestSerialize: encode(req), responseDeserialize: decode(res) }
  }
  return out as ServiceDefinition
}

/** A client constructor for `service` with direct codecs on `methods` (see `withDirectCodecs`). */
export function directClientConstructor(
  service: ServiceDefinition,
  root: protobuf.Root,
  methods: readonly string[],
  serviceName: string,
): ServiceClientConstructor {
  return makeGenericClientConstructor(withDirectCodecs(service, root, methods, 'client'), serviceName)
}

/** The request or response type of a method, from its path (`/pkg.Service/Method`) and the loaded service. */
function fullName(path: string, root: protobuf.Root, which: 'request' | 'response', method: string): string {
  const svc = path.slice(1, path.lastIndexOf('/'))
  const rpc = root.lookupService(svc).methods[method]
  if (!rpc) throw new TypeError(`withDirectCodecs: ${svc} has no method ${method}`)
  rpc.resolve()
  const t = which === 'request' ? rpc.resolvedRequestType : rpc.resolvedResponseType
  if (!t) throw new TypeError(`withDirectCodecs: ${svc}.${method} has no ${which} type`)
  return t.fullName.replace(/^\./, '')
}

/** An int64 field of a directly decoded message (a Long, or a number) as a number; 0 when unset or not finite. */
export function int64(v: unknown): number {
  if (typeof v === 'number') return Number.isFinite(v) ? v : 0
  if (v !== null && typeof v === 'object' && typeof (v as { toNumber?: unknown }).toNumber === 'function') return (v as { toNumber(): number }).toNumber()
  return 0
}
