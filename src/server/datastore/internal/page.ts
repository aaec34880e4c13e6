/**
 * The one paging rule both datastores follow: items in key order after the
 * page token, at most `pageSize` of them (0 = all), and the token of the next
 * page (the last key returned) only when more items follow.
 */
import type { Page } from '../types.js'
import { decodePageToken, encodePageToken, pageSizeOf } from './normalize.js'

/** The checked page size and the key to start after (undefined: from the start). */
export function pageStart(page: Page | undefined): { size: number; after: string | undefined } {
  return { size: pageSizeOf(page), after: decodePageToken(page?.pageToken) }
}

/**
 * Cuts `rows` (in key order, after the page token; when more follow, at least
 * `size + 1` of them) to one page and names the next one ('' at the end).
 */
export function cutPage<T>(rows: T[], size: number, keyOf: (t: T) => string): { items: T[]; next: string } {
  if (size === 0 || rows.length <= size) return { items: rows, next: '' }
  const items = rows.slice(0, size)
  return { items, next: encodePageToken(keyOf(items[size - 1] as T)) }
}
