/**
 * JSON value → google.protobuf.Struct in the object form used by
 * @grpc/proto-loader (protobufjs' bundled well-known types use the camelCase
 * field names `nullValue`, `numberValue`, `stringValue`, `boolValue`,
 * `structValue`, `listValue`).
 */
export type ProtoValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: ProtoStruct }
  | { listValue: { values: ProtoValue[] } }

export interface ProtoStruct {
  fields: Record<string, ProtoValue>
}

export function toValue(v: unknown): ProtoValue {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' }
  switch (typeof v) {
    case 'number':
      return { numberValue: v }
    case 'bigint':
      return { numberValue: Number(v) }
    case 'string':
      return { stringValue: v }
    case 'boolean':
      return { boolValue: v }
    case 'object':
      if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } }
      return { structValue: toStruct(v as Record<string, unknown>) }
    default:
      return { nullValue: 'NULL_VALUE' }
  }
}

export function toStruct(obj: Record<string, unknown>): ProtoStruct {
  const fields: Record<string, ProtoValue> = {}
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue
    fields[k] = toValue(v)
  }
  return { fields }
}

/** The reverse, for clients and tests. */
export function fromValue(v: Partial<Record<string, unknown>>): unknown {
  // With proto-loader's `oneofs: true`, `kind` names the member that is set.
  if (typeof v.kind === 'string' && v.kind !== 'nullValue') return fromValue({ [v.kind]: v[v.kind] })
  if ('stringValue' in v && v.stringValue !== undefined) return v.stringValue
  if ('numberValue' in v && v.numberValue !== undefined) return v.numberValue
  if ('boolValue' in v && v.boolValue !== undefined) return v.boolValue
  if ('structValue' in v && v.structValue !== undefined) return fromStruct(v.structValue)
  if ('listValue' in v && v.listValue !== undefined) {
    return ((v.listValue as { values?: Partial<Record<string, unknown>>[] }).values ?? []).map(fromValue)
  }
  return null
}

export function fromStruct(s: { fields?: Record<string, unknown> } | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = fromValue(v as Partial<Record<string, unknown>>)
  return out
}
