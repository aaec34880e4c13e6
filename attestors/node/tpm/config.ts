/**
 * Both halves' configuration, for tests and tools. Each half imports only its
 * own module, so that the halves share nothing but the payload module.
 */
export { DEFAULT_PCRS, parseTpmServerConfig, type TpmServerConfig } from './server-config.js'
export { parseTpmAgentConfig, type TpmAgentConfig } from './agent-config.js'
