/** `[audit]` in server.toml: on by default (its own file in data_dir), a path and interval of one's own, off, or refused when malformed. */
import { describe, expect, it } from 'vitest'
import { serverPlugins } from '../../../src/cli/plugins.js'
import { toServerConfig } from '../../../src/server/config.js'

const BASE = '/etc/warrant'
const cfg = (top: Record<string, unknown> = {}) =>
  toServerConfig({ server: { trust_domain: 'example.org', data_dir: '/var/lib/w' }, ...top }, BASE, serverPlugins)
const issues = (top: Record<string, unknown>): { path: string; message: string }[] => {
  try {
    cfg(top)
  } catch (err) {
    return (err as { details: { issues: { path: string; message: string }[] } }).details.issues
  }
  throw new Error('expected ERR_CONFIG_INVALID')
}

describe('[audit]', () => {
  it('absent: on, <data_dir>/server-audit.sqlite3, a checkpoint a minute', () => {
    expect(cfg().audit).toEqual({ path: '/var/lib/w/server-audit.sqlite3', checkpointIntervalMs: 60_000 })
  })

  it('a path (relative to the config file) and an interval; enabled = false turns it off', () => {
    expect(cfg({ audit: { path: 'audit/server.db', checkpoint_interval: '5s' } }).audit).toEqual({
      path: '/etc/warrant/audit/server.db',
      checkpointIntervalMs: 5000,
    })
    expect(cfg({ audit: { enabled: false } }).audit).toBeUndefined()
  })

  it('an unknown key or a bad value is refused with its path', () => {
    expect(issues({ audit: { enabeld: false } })).toEqual([expect.objectContaining({ path: 'audit' })])
    expect(issues({ audit: { checkpoint_interval: 'soon' } })).toEqual([expect.objectContaining({ path: 'audit.checkpoint_interval' })])
  })
})
