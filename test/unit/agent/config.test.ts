import { describe, expect, it } from 'vitest'
import { agentNodeAttestors, workloadAttestors } from '../../../attestors/index.js'
import { parseAgentConfig } from '../../../src/agent/config.js'
import { parseToml } from '../../../src/common/config/toml.js'
import { keyManagerPlugins } from '../../../src/keymanager/index.js'

const plugins = { nodeAttestors: agentNodeAttestors, workloadAttestors, keyManagers: keyManagerPlugins }
const base = `
[agent]
trust_domain = "example.org"
server_address = "127.0.0.1:8081"
socket_path = "run/api.sock"
data_dir = "/var/lib/warrant"
trust_bundle_path = "bundle.pem"
[plugins.node_attestor.join_token]
token = "abc"
[plugins.workload_attestor.unix]
`
const parse = (text: string) => parseAgentConfig(parseToml(text), { baseDir: '/etc/warrant', plugins })

function issues(text: string): string[] {
  try {
    parse(text)
  } catch (err) {
    expect((err as { code: string }).code).toBe('ERR_CONFIG_INVALID')
    return (err as { details: { issues: { path: string }[] } }).details.issues.map((i) => i.path)
  }
  throw new Error('expected ERR_CONFIG_INVALID')
}

describe('parseAgentConfig', () => {
  it('resolves paths against the config directory and applies defaults', () => {
    const c = parse(base)
    expect(c.trustDomain.name).toBe('example.org')
    expect(c.socketPath).toBe('/etc/warrant/run/api.sock')
    expect(c.dataDir).toBe('/var/lib/warrant')
    expect(c.trustBundlePath).toBe('/etc/warrant/bundle.pem')
    expect(c.x509SvidCacheMaxSize).toBe(1000)
    expect(c.jwtSvidCacheMaxSize).toBe(1000)
    expect(c.logLevel).toBe('info')
    expect(c.nodeAttestor.name).toBe('join_token')
    expect(c.workloadAttestors.map((w) => w.name)).toEqual(['unix'])
    expect(c.keyManager).toBeUndefined()
  })

  const cases: [string, string, string[]][] = [
    ['unknown core key', base.replace('[agent]', '[agent]\nbogus = 1'), ['agent.bogus']],
    [
      'bad trust domain and address',
      base.replace('"example.org"', '"Bad TD!"').replace('"127.0.0.1:8081"', '"nohost"'),
      ['agent.trust_domain', 'agent.server_address'],
    ],
    ['no trust source', base.replace('trust_bundle_path = "bundle.pem"', ''), ['agent.trust_bundle_path']],
    ['both trust sources', base.replace('[plugins', 'insecure_bootstrap = true\n[plugins'), ['agent.insecure_bootstrap']],
    ['unknown plugin', `${base}\n[plugins.node_attestor.nope]`, ['plugins.node_attestor.nope', 'plugins.node_attestor']],
    ['bad plugin config', base.replace('token = "abc"', 'token = "abc"\nextra = 1'), ['plugins.node_attestor.join_token']],
    ['no workload attestor', base.replace('[plugins.workload_attestor.unix]', ''), ['plugins.workload_attestor']],
    ['cache size', base.replace('[plugins', 'x509_svid_cache_max_size = 0\n[plugins'), ['agent.x509_svid_cache_max_size']],
    ['two key managers', `${base}\n[plugins.key_manager.memory]\n[plugins.key_manager.disk]\nkeys_path = "k"`, ['plugins.key_manager']],
  ]
  it.each(cases)('reports every issue with its path: %s', (_title, text, paths) => {
    const got = issues(text)
    for (const p of paths) expect(got).toContain(p)
  })

  it('takes one server or a list of servers (failover order, duplicates dropped)', () => {
    expect(parse(base).serverAddresses).toEqual(['127.0.0.1:8081'])
    const c = parse(base.replace('"127.0.0.1:8081"', '["a.example:8081", "10.0.0.2:8081", "a.example:8081"]'))
    expect(c.serverAddress).toBe('a.example:8081')
    expect(c.serverAddresses).toEqual(['a.example:8081', '10.0.0.2:8081'])
    expect(issues(base.replace('"127.0.0.1:8081"', '[]'))).toContain('agent.server_address')
    expect(issues(base.replace('"127.0.0.1:8081"', '["a.example:8081", "nohost"]')).some((p) => p.startsWith('agent.server_address'))).toBe(true)
  })

  it('reports a core error and two broken plugin blocks in one pass, each under its full path', () => {
    const text = base
      .replace('"127.0.0.1:8081"', '"nohost"')
      .replace('token = "abc"', 'token = ""')
      .replace(
        '[plugins.workload_attestor.unix]',
        '[plugins.workload_attestor.unix]\nbogus = 1\n[plugins.key_manager.pkcs11]\nmodule_path = "x.so"\nslot = 1\npin = "1234"',
      )
    expect(issues(text).sort()).toEqual([
      'agent.server_address',
      'plugins.key_manager.pkcs11.pin',
      'plugins.key_manager.pkcs11.pin_file',
      'plugins.node_attestor.join_token.token',
      'plugins.workload_attestor.unix',
    ])
  })

  it("labels the node attestor's failures and keeps its canReattest (join_token: single use)", async () => {
    const c = parse(base)
    const { PluginSet } = await import('../../../src/plugin/catalog.js')
    const { nullLogger } = await import('../../../src/common/log/logger.js')
    const set = new PluginSet({ log: nullLogger, clock: { now: () => 0 }, trustDomain: c.trustDomain, dataDir: c.dataDir })
    const na = await set.create(c.nodeAttestor, {})
    expect(na.canReattest).toBe(false)
    await expect(na.answer(Uint8Array.of(1), {})).rejects.toMatchObject({
      code: 'ERR_ATTESTATION_PAYLOAD_INVALID',
      message: 'nodeattestor(join_token): unexpected challenge',
    })
  })

  it('resolves relative plugin file paths against the config directory, not the working directory', () => {
    const c = parse(
      base.replace(
        '[plugins.node_attestor.join_token]\ntoken = "abc"',
        '[plugins.node_attestor.x509pop]\ncertificate_path = "pki/node.pem"\nprivate_key_path = "/abs/node.key"\nintermediates_path = "../shared/inter.pem"',
      ) + '\n[plugins.key_manager.disk]\nkeys_path = "keys"\n',
    )
    expect(c.nodeAttestor.config).toEqual({
      certificatePath: '/etc/warrant/pki/node.pem',
      privateKeyPath: '/abs/node.key',
      intermediatesPath: '/etc/shared/inter.pem',
    })
    // keys_path names state under data_dir: the disk key manager resolves it there.
    expect(c.keyManager?.config).toEqual({ keys_path: 'keys' })
  })

  it('pkcs11 module_path: a relative path resolves against the config directory, a bare library name is left to the loader', () => {
    const km = (mod: string) =>
      parse(`${base}\n[plugins.key_manager.pkcs11]\nmodule_path = "${mod}"\ntoken_label = "t"\npin_file = "hsm/pin"\n`).keyManager?.config as {
        module_path: string
        pin_file: string
      }
    expect(km('lib/softhsm2.so')).toMatchObject({ module_path: '/etc/warrant/lib/softhsm2.so', pin_file: '/etc/warrant/hsm/pin' })
    expect(km('libsofthsm2.so').module_path).toBe('libsofthsm2.so')
  })

  it('health_checks and metrics blocks', () => {
    const c = parse(base.replace('[plugins', '[agent.health_checks]\nbind_address = "127.0.0.1:8088"\n[agent.metrics]\nbind_address = ":9989"\n[plugins'))
    expect(c.health).toEqual({ host: '127.0.0.1', port: 8088, livePath: '/live', readyPath: '/ready' })
    expect(c.metrics).toEqual({ host: '127.0.0.1', port: 9989 })
    expect(parse(base).health).toBeUndefined()
    expect(parse(base).metrics).toBeUndefined()
    const got = issues(base.replace('[plugins', '[agent.health_checks]\nbind_address = "nope"\nextra = 1\n[agent.metrics]\n[plugins'))
    expect(got).toEqual(expect.arrayContaining(['agent.health_checks.bind_address', 'agent.health_checks.extra', 'agent.metrics.bind_address']))
  })
})
