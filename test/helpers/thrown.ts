import { IdentityError } from '../../src/errors/identity-error.js'

/** The IdentityError `fn` throws (anything else is rethrown; nothing thrown fails the test). */
export function thrown(fn: () => unknown): IdentityError {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err
    throw err
  }
  throw new Error('expected an IdentityError, nothing was thrown')
}

/** The code and exact message of the IdentityError `fn` throws. */
export const refusal = (fn: () => unknown): [string, string] => {
  const err = thrown(fn)
  return [err.code, err.message]
}
