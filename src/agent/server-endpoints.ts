/**
 * The servers an agent may talk to, and which one it talks to now.
 *
 * `server_address` names one or several `host:port` (all servers of one
 * trust domain, sharing one datastore: any of them accepts the agent's SVID
 * and serves its entries). Each host name is resolved to all of its
 * addresses, so a DNS name with several A/AAAA records counts as several
 * servers. The agent stays on its current server while it works; when the
 * server fails (the Sync stream breaks, a call is UNAVAILABLE) `failover()`
 * moves to the next target, and names are resolved again each time the list
 * wraps around (a replaced server is found by its name). The server's
 * identity does not depend on the address: the client checks the server's
 * SPIFFE ID (server-client.ts), so any address of any server is equally
 * trusted and an address that is not a server of the trust domain fails
 * the TLS handshake like a dead one.
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { F, type Logger } from '../common/log/logger.js'

/** Resolves a host name to its addresses (default: the system resolver, every family). */
export type LookupAll = (host: string) => Promise<string[]>

const systemLookup: LookupAll = async (host) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address)

/** `host:port` → [host, port] (a bracketed IPv6 host loses its brackets). */
export function splitTarget(address: string): { host: string; port: string } {
  const i = address.lastIndexOf(':')
  if (i < 0) throw new RangeError(`not host:port: ${address}`)
  let host = address.slice(0, i)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  return { host, port: address.slice(i + 1) }
}

function joinTarget(host: string, port: string): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`
}

export class ServerEndpoints {
  readonly #configured: readonly string[]
  readonly #lookup: LookupAll
  readonly #log: Logger
  #targets: string[]
  #index = 0

  constructor(opts: { addresses: readonly string[]; log: Logger; lookup?: LookupAll }) {
    if (opts.addresses.length === 0) throw new RangeError('at least one server address is needed')
    this.#configured = [...opts.addresses]
    this.#lookup = opts.lookup ?? systemLookup
    this.#log = opts.log
    // Until the first resolution, the configured addresses as they are (grpc resolves names itself).
    this.#targets = [...this.#configured]
  }

  /** The address the agent uses now. */
  get current(): string {
    return this.#targets[this.#index]!
  }

  /** How many targets there are in a round (after the last resolution). */
  get size(): number {
    return this.#targets.length
  }

  /**
   * Expands every configured name into its addresses, in configured order,
   * without duplicates. A name that does not resolve is kept as it is (the
   * connection then fails and the agent moves on); literal IPs and
   * `localhost`-style names are kept when the lookup returns nothing.
   */
  async resolve(): Promise<void> {
    const out: string[] = []
    for (const a of this.#configured) {
      const { host, port } = splitTarget(a)
      let hosts: string[]
      if (isIP(host) !== 0) hosts = [host]
      else {
        try {
          hosts = await this.#lookup(host)
        } catch (err) {
          this.#log.warn({ [F.ADDRESS]: a, [F.ERR]: err }, 'Server address did not resolve')
          hosts = []
        }
        if (hosts.length === 0) hosts = [host]
      }
      for (const h of hosts) {
        const t = joinTarget(h, port)
        if (!out.includes(t)) out.push(t)
      }
    }
    const prev = this.current
    this.#targets = out
    // Stay on the same target when it is still listed.
    const same = out.indexOf(prev)
    this.#index = same >= 0 ? same : 0
  }

  /**
   * Moves to the next target and returns it; after the last one, resolves the
   * names again and starts over from the first. With one target, returns it.
   */
  async failover(): Promise<string> {
    const from = this.current
    if (this.#index + 1 < this.#targets.length) this.#index++
    else {
      await this.resolve()
      this.#index = 0
    }
    if (this.current !== from) this.#log.info({ from, [F.ADDRESS]: this.current }, 'Failing over to another server')
    return this.current
  }
}
