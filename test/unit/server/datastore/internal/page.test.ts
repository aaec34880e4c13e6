import { describe, expect, it } from 'vitest'
import { cutPage, pageStart } from '../../../../../src/server/datastore/internal/page.js'
import { encodePageToken } from '../../../../../src/server/datastore/internal/normalize.js'

const id = (s: string): string => s

describe('datastore paging rule', () => {
  it('returns everything without a next token when the page size is 0 or the rows fit', () => {
    expect(cutPage(['a', 'b', 'c'], 0, id)).toEqual({ items: ['a', 'b', 'c'], next: '' })
    expect(cutPage(['a', 'b'], 2, id)).toEqual({ items: ['a', 'b'], next: '' })
    expect(cutPage([], 5, id)).toEqual({ items: [], next: '' })
  })

  it('cuts to the page size and names the last key returned as the next page', () => {
    const page = cutPage(['a', 'b', 'c'], 2, id)
    expect(page.items).toEqual(['a', 'b'])
    expect(page.next).toBe(encodePageToken('b'))
    expect(pageStart({ pageSize: 2, pageToken: page.next })).toEqual({ size: 2, after: 'b' })
  })

  it('starts from the beginning without a token and refuses a bad size or token', () => {
    expect(pageStart(undefined)).toEqual({ size: 0, after: undefined })
    expect(() => pageStart({ pageSize: -1 })).toThrow(RangeError)
    expect(() => pageStart({ pageSize: 1, pageToken: 'not-a-token' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })
})
