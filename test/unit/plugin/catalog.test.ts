import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { errorPrefixing, PluginSet, selectPlugins, type CatalogSpec } from '../../../src/plugin/catalog.js'
import type { PluginDefinition, PluginDeps } from '../../../src/plugin/contracts.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { FakeClock } from '../../helpers/fake-clock.js'

interface Thing {
  name: string
  deps: PluginDeps & { extra?: string }
  poke(): Promise<string>
  close(): Promise<void>
}

const events: string[] = []
const Schema = z.object({ file_path: z.string().min(1).optional(), state_path: z.string().optional(), size: z.number().int().optional() }).strict()

const def = (
  type: 'key_manager' | 'node_attestor',
  name: string,
  o: { failCreate?: unknown; failPoke?: unknown; failClose?: boolean } = {},
): PluginDefinition<z.infer<typeof Schema>, Thing, PluginDeps & { extra?: string }> => ({
  type,
  name,
  dataDirRelativeKeys: ['state_path'],
  // plugins give paths relative to their block (or already prefixed): the catalog puts them under the block
  parseConfig: (raw) => parseWith(Schema, raw ?? {}),
  create: async (_c, deps) => {
    if (o.failCreate !== undefined) throw o.failCreate
    events.push(`create ${name}`)
    return {
      name,
      deps,
      poke: async () => {
        if (o.failPoke !== undefined) throw o.failPoke
        return `poked ${name}`
      },
      close: async () => {
        events.push(`close ${name}`)
        if (o.failClose) throw new Error(`close ${name} failed`)
      },
    }
  },
})

const spec = {
  key_manager: { cardinality: 'exactly_one', plugins: [def('key_manager', 'alpha'), def('key_manager', 'beta')], defaults: { alpha: {} } },
  node_attestor: {
    cardinality: 'at_least_one',
    plugins: [def('node_attestor', 'one'), def('node_attestor', 'two')],
    adapt: errorPrefixing<Thing>(['poke'], 'ERR_NODE_ATTESTATION_FAILED'),
  },
} satisfies CatalogSpec

const base = () => ({ log: captureLogger(), clock: new FakeClock(), trustDomain: TrustDomain.fromString('example.org'), dataDir: '/var/lib/w' })
const select = (raw: unknown) => selectPlugins(spec, raw, { baseDir: '/etc/w' })

describe('selectPlugins', () => {
  it('selects by type and name, resolves file paths against the config directory (not data-dir keys), uses defaults for an absent type', () => {
    const { selection, issues } = select({ node_attestor: { two: { file_path: 'ca.pem', state_path: 'st', size: 3 }, one: {} } })
    expect(issues).toEqual([])
    expect(selection.key_manager.map((p) => [p.name, p.label, p.config])).toEqual([['alpha', 'keymanager(alpha)', {}]])
    expect(selection.node_attestor.map((p) => p.name)).toEqual(['two', 'one'])
    expect(selection.node_attestor[0]!).toMatchObject({
      type: 'node_attestor',
      label: 'nodeattestor(two)',
      config: { file_path: '/etc/w/ca.pem', state_path: 'st', size: 3 },
    })
  })

  it.each<{ title: string; raw: unknown; expected: { path: string; message: RegExp }[] }>([
    {
      title: 'no node attestor',
      raw: { node_attestor: {} },
      expected: [{ path: 'plugins.node_attestor', message: /at least one node_attestor must be configured \(found none\)/ }],
    },
    {
      title: 'two key managers',
      raw: { key_manager: { alpha: {}, beta: {} }, node_attestor: { one: {} } },
      expected: [{ path: 'plugins.key_manager', message: /exactly one key_manager .*found alpha, beta/ }],
    },
    {
      title: 'an empty key manager table (defaults apply only when absent)',
      raw: { key_manager: {}, node_attestor: { one: {} } },
      expected: [{ path: 'plugins.key_manager', message: /exactly one/ }],
    },
    {
      title: 'an unknown type',
      raw: { workload_attestor: {}, node_attestor: { one: {} } },
      expected: [{ path: 'plugins.workload_attestor', message: /unknown plugin type.*key_manager, node_attestor/ }],
    },
    {
      title: 'an unknown plugin',
      raw: { node_attestor: { three: {} } },
      expected: [{ path: 'plugins.node_attestor.three', message: /unknown node_attestor plugin "three" \(known: one, two\)/ }],
    },
    { title: 'a block that is not a table', raw: { node_attestor: { one: 5 } }, expected: [{ path: 'plugins.node_attestor.one', message: /must be a table/ }] },
    {
      title: 'a type that is not a table',
      raw: { node_attestor: [] },
      expected: [
        { path: 'plugins.node_attestor', message: /must be a table/ },
        { path: 'plugins.node_attestor', message: /at least one/ },
      ],
    },
    {
      title: 'plugins not a table',
      raw: 'x',
      expected: [
        { path: 'plugins', message: /must be a table/ },
        { path: 'plugins.node_attestor', message: /at least one/ },
      ],
    },
  ])('$title', ({ raw, expected }) => {
    const { issues } = select(raw)
    expect(issues).toHaveLength(expected.length)
    expected.forEach((e, i) => {
      expect(issues[i]!.path).toBe(e.path)
      expect(issues[i]!.message).toMatch(e.message)
    })
  })

  it("puts every block's issues under its full path, all blocks in one pass", () => {
    const { issues, selection } = select({ key_manager: { alpha: { size: 'big', bogus: 1 } }, node_attestor: { one: { file_path: '' }, two: { size: 1.5 } } })
    expect(issues.map((i) => i.path).sort()).toEqual([
      'plugins.key_manager.alpha',
      'plugins.key_manager.alpha.size',
      'plugins.node_attestor.one.file_path',
      'plugins.node_attestor.two.size',
    ])
    expect(issues.find((i) => i.path === 'plugins.key_manager.alpha')!.message).toMatch(/bogus/)
    expect(selection.node_attestor).toEqual([])
  })

  it('keeps a path a plugin already prefixed, and maps a plain error to the block', () => {
    const prefixed: PluginDefinition<unknown, Thing> = {
      type: 'key_manager',
      name: 'alpha',
      parseConfig: (raw) => parseWith(Schema, raw, 'plugins.key_manager.alpha'),
      create: async () => {
        throw new Error('unused')
      },
    }
    const plain: PluginDefinition<unknown, Thing> = {
      type: 'key_manager',
      name: 'beta',
      parseConfig: () => {
        throw new Error('nope')
      },
      create: async () => {
        throw new Error('unused')
      },
    }
    const s = { key_manager: { cardinality: 'at_most_one', plugins: [prefixed, plain] } } satisfies CatalogSpec
    expect(selectPlugins(s, { key_manager: { alpha: { size: 'x' } } }, { baseDir: '/' }).issues.map((i) => i.path)).toEqual(['plugins.key_manager.alpha.size'])
    expect(selectPlugins(s, { key_manager: { beta: {} } }, { baseDir: '/' }).issues).toEqual([{ path: 'plugins.key_manager.beta', message: 'nope' }])
  })
})

describe('PluginSet', () => {
  it('creates with the common deps and the extra ones, closes in reverse order of creation even when one close fails', async () => {
    events.length = 0
    const b = base()
    const set = new PluginSet(b)
    const { selection } = select({ node_attestor: { one: {}, two: {} } })
    const km = await set.create(selection.key_manager[0]!, {})
    const nas = await set.createAll(selection.node_attestor, { extra: 'datastore' })
    expect(km.deps).toMatchObject({ clock: b.clock, trustDomain: b.trustDomain, dataDir: '/var/lib/w' })
    expect(nas.get('two')!.deps.extra).toBe('datastore')
    km.deps.log.info({}, 'hello')
    expect(b.log.lines.at(-1)!.fields).toMatchObject({ plugin_type: 'key_manager', plugin_name: 'alpha' })
    await set.close()
    expect(events).toEqual(['create alpha', 'create one', 'create two', 'close two', 'close one', 'close alpha'])
    await set.close() // nothing left to close
    expect(events).toHaveLength(6)
  })

  it('a failed close is logged and the others still close', async () => {
    events.length = 0
    const b = base()
    const s = {
      key_manager: { cardinality: 'exactly_one', plugins: [def('key_manager', 'alpha', { failClose: true })] },
      node_attestor: { cardinality: 'at_least_one', plugins: [def('node_attestor', 'one')] },
    } satisfies CatalogSpec
    const { selection } = selectPlugins(s, { key_manager: { alpha: {} }, node_attestor: { one: {} } }, { baseDir: '/' })
    const set = new PluginSet(b)
    await set.create(selection.key_manager[0]!, {})
    await set.create(selection.node_attestor[0]!, {})
    await set.close()
    expect(events).toEqual(['create alpha', 'create one', 'close one', 'close alpha'])
    expect(b.log.lines.find((l) => l.msg === 'Plugin close failed')!.fields).toMatchObject({ plugin_type: 'key_manager', plugin_name: 'alpha' })
  })

  it.each([
    { thrown: new IdentityError('ERR_HSM_UNAVAILABLE', 'token not found'), code: 'ERR_HSM_UNAVAILABLE', message: 'keymanager(alpha): token not found' },
    { thrown: new Error('disk full'), code: 'ERR_PLUGIN_INVALID', message: 'keymanager(alpha): disk full' },
  ])('labels a failure to create ($code)', async ({ thrown, code, message }) => {
    const s = { key_manager: { cardinality: 'exactly_one', plugins: [def('key_manager', 'alpha', { failCreate: thrown })] } } satisfies CatalogSpec
    const { selection } = selectPlugins(s, { key_manager: { alpha: {} } }, { baseDir: '/' })
    await expect(new PluginSet(base()).create(selection.key_manager[0]!, {})).rejects.toMatchObject({ code, message })
  })
})

describe('errorPrefixing', () => {
  it.each([
    { thrown: new IdentityError('ERR_TPM_VERIFICATION_FAILED', 'bad quote'), code: 'ERR_TPM_VERIFICATION_FAILED', message: 'nodeattestor(one): bad quote' },
    { thrown: new Error('socket closed'), code: 'ERR_NODE_ATTESTATION_FAILED', message: 'nodeattestor(one): socket closed' },
  ])("labels the adapted methods' failures, keeping an IdentityError code ($code)", async ({ thrown, code, message }) => {
    const s = { node_attestor: spec.node_attestor } satisfies CatalogSpec
    const one = def('node_attestor', 'one', { failPoke: thrown })
    const { selection } = selectPlugins({ node_attestor: { ...s.node_attestor, plugins: [one] } }, { node_attestor: { one: {} } }, { baseDir: '/' })
    const inst = await new PluginSet(base()).create(selection.node_attestor[0]!, {})
    const err = await inst.poke().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(IdentityError)
    expect(err).toMatchObject({ code, message })
    expect((err as IdentityError).cause).toBe(thrown)
  })

  it('keeps the other methods and properties of the instance (no Proxy: a plain object of the same shape)', async () => {
    class WithPrivate {
      readonly canReattest = false
      #secret = 'ok'
      async attest() {
        return this.#secret
      }
      other() {
        return this.#secret
      }
    }
    const adapted = errorPrefixing<WithPrivate>(['attest'], 'ERR_NODE_ATTESTATION_FAILED')(new WithPrivate(), 'nodeattestor(x)')
    expect(adapted.canReattest).toBe(false)
    expect(await adapted.attest()).toBe('ok')
    expect(adapted.other()).toBe('ok')
    expect(Object.keys(adapted).sort()).toEqual(['attest', 'canReattest', 'other'])
  })
})
