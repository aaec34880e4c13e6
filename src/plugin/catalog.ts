/**
 * The plugin catalog: the one place that turns the `[plugins.<type>.<name>]`
 * blocks of a config file into plugin instances, as SPIRE's catalog does.
 *
 * - `selectPlugins` resolves each block's plugin by type and name among the
 *   definitions a process registered, resolves the block's relative file paths
 *   against the config file's directory, runs the plugin's `parseConfig`, and
 *   checks each type's cardinality. It never throws for bad input: every
 *   problem comes back as an issue with its full path
 *   (`plugins.node_attestor.tpm.ek_ca_path: Required`), so a caller reports
 *   core and plugin problems together, in one pass.
 * - `PluginSet` creates the selected plugins with their dependencies, prefixes
 *   their errors (`nodeattestor(tpm): ...`) and closes them in reverse order
 *   of creation.
 *
 * Core code never names a concrete plugin: the composition root registers the
 * definitions (src/cli/plugins.ts).
 */
import { resolvePluginPaths } from '../common/config/plugin-paths.js'
import type { ConfigIssue } from '../common/config/issues.js'
import type { Clock } from '../common/clock.js'
import { F, type Logger } from '../common/log/logger.js'
import type { ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import type { PluginDefinition, PluginDeps, PluginType } from './contracts.js'

/** How many plugins of a type a process takes. */
export type Cardinality = 'exactly_one' | 'at_most_one' | 'at_least_one'

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- PluginDefinition is invariant in its config type
export type AnyPlugin<I, D extends PluginDeps = PluginDeps> = PluginDefinition<any, I, D>

/** One plugin type of a process: the definitions it offers and how many it takes. */
export interface SlotSpec<I, D extends PluginDeps = PluginDeps> {
  cardinality: Cardinality
  plugins: readonly AnyPlugin<I, D>[]
  /** The blocks used when the file has no block of this type (e.g. a default datastore). */
  defaults?: Readonly<Record<string, Readonly<Record<string, unknown>>>>
  /**
   * Wraps each created instance so that its failures carry the plugin's label;
   * `errorPrefixing` builds one for a type's methods. Default: the instance as created.
   */
  adapt?: (instance: I, label: string) => I
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type CatalogSpec = { readonly [T in PluginType]?: SlotSpec<any, any> }

/** A plugin chosen by the config, with its validated config. */
export interface ConfiguredPlugin<I, D extends PluginDeps = PluginDeps> {
  type: PluginType
  name: string
  /** `nodeattestor(tpm)`: the prefix of this plugin's errors and its log fields' subject. */
  label: string
  definition: AnyPlugin<I, D>
  config: unknown
  /** From the slot's spec (method syntax: a selection of a narrower instance type is still a selection of a wider one). */
  adapt?(instance: I, label: string): I
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type InstanceOf<S> = S extends SlotSpec<infer I, any> ? I : never
type DepsOf<S> = S extends SlotSpec<unknown, infer D> ? D : PluginDeps

export type Selection<S extends CatalogSpec> = { [T in keyof S]-?: ConfiguredPlugin<InstanceOf<S[T]>, DepsOf<S[T]>>[] }

/** `nodeattestor(tpm)`, `keymanager(pkcs11)`: the label SPIRE uses for a plugin's errors. */
export function pluginLabel(type: PluginType, name: string): string {
  return `${type.replace(/_/g, '')}(${name})`
}

const isTable = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** The issues of a plugin's `parseConfig` failure, under the block's path (plugins may give paths relative to the block or already prefixed). */
function blockIssues(err: unknown, prefix: string): ConfigIssue[] {
  if (err instanceof IdentityError && Array.isArray(err.details?.issues)) {
    return (err.details.issues as ConfigIssue[]).map((i) => ({
      path: i.path === prefix || i.path.startsWith(`${prefix}.`) ? i.path : i.path === '' || i.path === '(root)' ? prefix : `${prefix}.${i.path}`,
      message: i.message,
    }))
  }
  return [{ path: prefix, message: err instanceof Error ? err.message : String(err) }]
}

const CARDINALITY_TEXT: Record<Cardinality, string> = {
  exactly_one: 'exactly one',
  at_most_one: 'at most one',
  at_least_one: 'at least one',
}

/**
 * Validates the `plugins` table of a config file against a process's catalog.
 * `baseDir` is the config file's directory. Returns the selection (plugins
 * whose block is valid) and every issue found; callers fail when issues is
 * non-empty.
 */
export function selectPlugins<S extends CatalogSpec>(spec: S, raw: unknown, opts: { baseDir: string }): { selection: Selection<S>; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  const types = Object.keys(spec) as PluginType[]
  let table: Record<string, unknown> = {}
  if (raw !== undefined) {
    if (isTable(raw)) table = raw
    else issues.push({ path: 'plugins', message: 'must be a table' })
  }
  for (const t of Object.keys(table)) {
    if (!types.includes(t as PluginType)) issues.push({ path: `plugins.${t}`, message: `unknown plugin type "${t}" (this process takes: ${types.join(', ')})` })
  }
  const selection = {} as Record<PluginType, ConfiguredPlugin<unknown>[]>
  for (const type of types) {
    const slot = spec[type]!
    const prefix = `plugins.${type}`
    const given = table[type]
    let blocks: Record<string, unknown>
    if (given === undefined) blocks = { ...(slot.defaults ?? {}) }
    else if (isTable(given)) blocks = given
    else {
      issues.push({ path: prefix, message: 'must be a table of plugin blocks' })
      blocks = {}
    }
    const names = Object.keys(blocks)
    const n = names.length
    const ok = slot.cardinality === 'exactly_one' ? n === 1 : slot.cardinality === 'at_most_one' ? n <= 1 : n >= 1
    if (!ok)
      issues.push({ path: prefix, message: `${CARDINALITY_TEXT[slot.cardinality]} ${type} must be configured (found ${n === 0 ? 'none' : names.join(', ')})` })
    const chosen: ConfiguredPlugin<unknown>[] = []
    for (const name of names) {
      const path = `${prefix}.${name}`
      const def = slot.plugins.find((d) => d.name === name)
      if (!def) {
        issues.push({ path, message: `unknown ${type} plugin "${name}" (known: ${slot.plugins.map((d) => d.name).join(', ') || 'none'})` })
        continue
      }
      const block = blocks[name] ?? {}
      if (!isTable(block)) {
        issues.push({ path, message: 'must be a table' })
        continue
      }
      try {
        const resolved = resolvePluginPaths(block, opts.baseDir, def.dataDirRelativeKeys ? { dataDirRelative: def.dataDirRelativeKeys } : {})
        chosen.push({
          type,
          name,
          label: pluginLabel(type, name),
          // eslint-disable-next-line @typescript-eslint/no-unsafe-assignment -- the catalog holds plugins of every config type; this one's config came from its own parseConfig
          definition: def,
          config: def.parseConfig(resolved),
          ...(slot.adapt ? { adapt: slot.adapt } : {}),
        })
      } catch (err) {
        issues.push(...blockIssues(err, path))
      }
    }
    selection[type] = chosen
  }
  return { selection: selection as unknown as Selection<S>, issues }
}

/** A plugin failure with the plugin's label; an IdentityError keeps its code, anything else gets `fallback`. */
export function pluginError(label: string, err: unknown, fallback: ErrorCode): IdentityError {
  if (err instanceof IdentityError) {
    return new IdentityError(err.code, `${label}: ${err.message}`, { cause: err, ...(err.details ? { details: { ...err.details } } : {}) })
  }
  return new IdentityError(fallback, `${label}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}

/**
 * An adapter for `SlotSpec.adapt`: a plain object whose methods `methods`
 * call the instance's and relabel their failures (sync throws and rejections);
 * every other property of the instance reads through. No Proxy: the adapter
 * has exactly the instance's public shape.
 */
export function errorPrefixing<I extends object>(methods: readonly string[], fallback: ErrorCode): (instance: I, label: string) => I {
  return (instance, label) => {
    const out: Record<string, unknown> = {}
    const names = new Set<string>([...methods])
    for (let o: object | null = instance; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
      for (const k of Object.getOwnPropertyNames(o)) if (k !== 'constructor') names.add(k)
    }
    for (const k of names) {
      const v = (instance as Record<string, unknown>)[k]
      if (typeof v !== 'function') {
        Object.defineProperty(out, k, { enumerable: true, get: () => (instance as Record<string, unknown>)[k] })
        continue
      }
      const fn = v as (...a: unknown[]) => unknown
      if (!methods.includes(k)) {
        out[k] = fn.bind(instance)
        continue
      }
      out[k] = (...args: unknown[]) => {
        let r: unknown
        try {
          r = fn.apply(instance, args)
        } catch (err) {
          throw pluginError(label, err, fallback)
        }
        return r instanceof Promise ? r.catch((err: unknown) => Promise.reject(pluginError(label, err, fallback))) : r
      }
    }
    return out as I
  }
}

/**
 * The plugin instances of a running process: created one by one (each with the
 * common deps and what its type needs), closed together in reverse order of
 * creation. A failure to create is labelled (`keymanager(pkcs11): ...`).
 */
export class PluginSet {
  readonly #base: { log: Logger; clock: Clock; trustDomain: TrustDomain; dataDir: string }
  readonly #closers: { type: string; name: string; close: () => Promise<void> }[] = []

  constructor(base: { log: Logger; clock: Clock; trustDomain: TrustDomain; dataDir: string }) {
    this.#base = base
  }

  async create<I, D extends PluginDeps>(p: ConfiguredPlugin<I, D>, extra: Omit<D, keyof PluginDeps>): Promise<I> {
    const log = this.#base.log.child({ [F.PLUGIN_TYPE]: p.type, [F.PLUGIN_NAME]: p.name })
    const deps = { ...this.#base, log, ...extra } as D
    let inst: I & { close?(): Promise<void> }
    try {
      inst = await p.definition.create(p.config, deps)
    } catch (err) {
      throw pluginError(p.label, err, 'ERR_PLUGIN_INVALID')
    }
    if (typeof inst.close === 'function') this.#closers.push({ type: p.type, name: p.name, close: () => inst.close!() })
    return p.adapt ? p.adapt(inst, p.label) : inst
  }

  /** Creates each plugin in order; the map is keyed by plugin name. */
  async createAll<I, D extends PluginDeps>(list: readonly ConfiguredPlugin<I, D>[], extra: Omit<D, keyof PluginDeps>): Promise<Map<string, I>> {
    const out = new Map<string, I>()
    for (const p of list) out.set(p.name, await this.create(p, extra))
    return out
  }

  /** Closes every plugin created, last first; a failure is logged and the others still close. */
  async close(): Promise<void> {
    while (this.#closers.length > 0) {
      const c = this.#closers.pop()!
      await c
        .close()
        .catch((err: unknown) => this.#base.log.warn({ [F.PLUGIN_TYPE]: c.type, [F.PLUGIN_NAME]: c.name, [F.ERR]: String(err) }, 'Plugin close failed'))
    }
  }
}
