/** google.protobuf.Struct as proto-loader decodes it (`oneofs: true`: `kind` names the member set) → plain JSON. */
type ProtoValue = { kind?: string; [member: string]: unknown }

/** Struct → plain object. Objects are built without prototypes' setters, so a claim named `__proto__` stays data. */
export function fromStruct(s: { fields?: Record<string, unknown> } | null | undefined, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(s?.fields ?? {}))
    Object.defineProperty(out, k, { value: fromValue(v as ProtoValue, depth), enumerable: true, writable: true, configurable: true })
  return out
}

function fromValue(v: ProtoValue, depth: number): unknown {
  if (depth > 64) return null
  switch (v?.kind) {
    case 'stringValue':
      return v.stringValue
    case 'numberValue':
      return v.numberValue
    case 'boolValue':
      return v.boolValue
    case 'structValue':
      return fromStruct(v.structValue as { fields?: Record<string, unknown> }, depth + 1)
    case 'listValue':
      return ((v.listValue as { values?: ProtoValue[] } | undefined)?.values ?? []).map((x) => fromValue(x, depth + 1))
    default:
      return null
  }
}
