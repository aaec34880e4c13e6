import { describe, expect, it } from 'vitest'
import { canonicalSelectors, checkSelector, isSubset, parseSelector } from '../../../../src/server/registration/selectors.js'
import type { Selector } from '../../../../src/server/datastore/types.js'

const sel = (type: string, value: string): Selector => ({ type, value })

describe('parseSelector', () => {
  it.each([
    ['unix:uid:1000', sel('unix', 'uid:1000')],
    ['k8s:ns:default', sel('k8s', 'ns:default')],
    ['tpm:pcr:7:abcdef', sel('tpm', 'pcr:7:abcdef')],
    ['join_token:0123', sel('join_token', '0123')],
    ['a:b', sel('a', 'b')],
    [`${'t'.repeat(64)}:v`, sel('t'.repeat(64), 'v')],
    [`x:${'v'.repeat(1024)}`, sel('x', 'v'.repeat(1024))],
    ['x:value with spaces', sel('x', 'value with spaces')],
  ])('accepts %s', (input, expected) => {
    expect(parseSelector(input)).toEqual(expected)
  })

  it.each([
    ['no colon', 'unix'],
    ['empty type', ':uid:1000'],
    ['empty value', 'unix:'],
    ['empty string', ''],
    ['upper-case type', 'Unix:uid:1000'],
    ['dash in type', 'my-type:v'],
    ['type too long', `${'t'.repeat(65)}:v`],
    ['value too long', `x:${'v'.repeat(1025)}`],
    ['control character in value', 'x:a\nb'],
    ['DEL in value', 'x:a\x7f'],
    ['NUL in value', 'x:\0'],
  ])('rejects %s', (_title, input) => {
    expect(() => parseSelector(input)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })

  it('rejects a non-string', () => {
    expect(() => parseSelector(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })
})

describe('checkSelector', () => {
  it('returns a plain copy of a good selector (extra fields dropped)', () => {
    const input = { type: 'unix', value: 'uid:0', extra: 1 } as Selector
    const out = checkSelector(input)
    expect(out).toEqual(sel('unix', 'uid:0'))
    expect(out).not.toBe(input)
  })

  it.each([
    ['empty type', sel('', 'v')],
    ['bad type characters', sel('a.b', 'v')],
    ['empty value', sel('a', '')],
    ['value too long', sel('a', 'x'.repeat(1025))],
    ['tab in value', sel('a', 'x\ty')],
    ['non-string value', { type: 'a', value: 7 } as unknown as Selector],
  ])('rejects %s', (_title, s) => {
    expect(() => checkSelector(s)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })
})

describe('canonicalSelectors', () => {
  it.each([
    { title: 'empty', input: [], expected: [] },
    {
      title: 'sorts by type:value',
      input: [sel('unix', 'uid:1'), sel('k8s', 'ns:a'), sel('unix', 'gid:2')],
      expected: [sel('k8s', 'ns:a'), sel('unix', 'gid:2'), sel('unix', 'uid:1')],
    },
    { title: 'removes duplicates', input: [sel('a', 'x'), sel('a', 'x'), sel('a', 'y'), sel('a', 'x')], expected: [sel('a', 'x'), sel('a', 'y')] },
    { title: 'type and value split matters only as text', input: [sel('a', 'b:c'), sel('a', 'b')], expected: [sel('a', 'b'), sel('a', 'b:c')] },
  ])('$title', ({ input, expected }) => {
    const copy = structuredClone(input)
    expect(canonicalSelectors(input)).toEqual(expected)
    expect(input).toEqual(copy) // input untouched
  })

  it('is idempotent and independent of input order', () => {
    const a = [sel('z', '1'), sel('a', '2'), sel('m', '3'), sel('a', '1')]
    const once = canonicalSelectors(a)
    expect(canonicalSelectors(once)).toEqual(once)
    expect(canonicalSelectors([...a].reverse())).toEqual(once)
  })
})

describe('isSubset', () => {
  const node = [sel('tpm', 'pcr:7:aa'), sel('tpm', 'ek:hash'), sel('unix', 'uid:0')]
  it.each([
    { title: 'empty subset', subset: [], expected: true },
    { title: 'one member', subset: [sel('tpm', 'ek:hash')], expected: true },
    { title: 'all members, any order', subset: [sel('unix', 'uid:0'), sel('tpm', 'pcr:7:aa'), sel('tpm', 'ek:hash')], expected: true },
    { title: 'one missing', subset: [sel('tpm', 'ek:hash'), sel('tpm', 'pcr:0:bb')], expected: false },
    { title: 'same value, other type', subset: [sel('k8s', 'uid:0')], expected: false },
    { title: 'prefix of a value is not a match', subset: [sel('tpm', 'pcr:7')], expected: false },
  ])('$title → $expected', ({ subset, expected }) => {
    expect(isSubset(subset, node)).toBe(expected)
    expect(isSubset(subset, new Set(node.map((s) => `${s.type}:${s.value}`)))).toBe(expected)
  })

  it('nothing non-empty is a subset of the empty set', () => {
    expect(isSubset([sel('a', 'b')], [])).toBe(false)
  })
})
