/**
 * The resource-server check as a Fastify plugin: an `onRequest` hook on every
 * route registered after it in the same scope (and, since it skips Fastify's
 * encapsulation like fastify-plugin does, on its parent's routes too).
 * A route names its scopes in its config: `{ config: { warrantScopes: ['tools:read'] } }`,
 * which override `routeScopes`/`requiredScopes`; `config: { warrant: false }` exempts a route.
 * On success `request.warrant` holds the verified request.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { createRequestVerifier, type ResourceServerOptions, type WarrantContext } from './verifier.js'

declare module 'fastify' {
  interface FastifyRequest {
    warrant: WarrantContext | null
  }
  interface FastifyContextConfig {
    warrantScopes?: readonly string[]
    warrant?: boolean
  }
}

const plugin: FastifyPluginAsync<ResourceServerOptions> = async (app: FastifyInstance, opts: ResourceServerOptions) => {
  const verifier = createRequestVerifier(opts)
  app.decorateRequest('warrant', null)
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config as { warrantScopes?: readonly string[]; warrant?: boolean } | undefined
    if (config?.warrant === false) return
    try {
      request.warrant = await verifier.verify(request.raw, { path: request.routeOptions.url, scopes: config?.warrantScopes })
      if (request.warrant.dpopNonce !== undefined) void reply.header('dpop-nonce', request.warrant.dpopNonce)
    } catch (err) {
      const r = verifier.refusal(err, request.raw)
      return reply.code(r.status).headers(r.headers).send(r.body)
    }
  })
}
;(plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true

export const warrantFastify = plugin
