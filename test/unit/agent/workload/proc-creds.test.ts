import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parseProcCreds, sameProcCreds } from '../../../../src/agent/workload/proc-creds.js'

const STATUS = 'Name:\tUid:\t9\nUmask:\t0022\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nFDSize:\t64\nGroups:\t9 10 \n'

describe('parseProcCreds', () => {
  it.each([
    {
      title: 'all four ids and the groups; names inside other lines are not lines',
      text: STATUS,
      expected: { uids: [1, 2, 3, 4], gids: [5, 6, 7, 8], groups: [9, 10] },
    },
    {
      title: 'empty Groups line, last line without newline',
      text: 'Name:\tx\nGroups:\t\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t4294967294',
      expected: { uids: [0, 0, 0, 0], gids: [0, 0, 0, 4294967294], groups: [] },
    },
  ])('$title', ({ text, expected }) => {
    expect(parseProcCreds(Buffer.from(text))).toMatchObject(expected)
    // Bytes past the length are not read.
    expect(parseProcCreds(Buffer.from(`${text}\nUid:\t5\t5\t5\t5\n`), Buffer.byteLength(text))).toMatchObject(expected)
  })

  it.each([
    { title: 'no Uid line', text: 'Name:\tx\nGid:\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'no Gid line', text: 'Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'no Groups line', text: 'Name:\tx\nUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n' },
    { title: 'three uids', text: 'Name:\tx\nUid:\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'five gids', text: 'Name:\tx\nUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'a negative id', text: 'Name:\tx\nUid:\t1\t-2\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'an id past 32 bits', text: 'Name:\tx\nUid:\t1\t4294967296\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n' },
    { title: 'a malformed group', text: 'Name:\tx\nUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t5 x6\n' },
    { title: 'Uid only inside another line', text: 'Name:\tUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\n' },
  ])('refuses $title', ({ text }) => {
    expect(parseProcCreds(Buffer.from(text))).toBeUndefined()
  })

  it('reads this process', () => {
    const c = parseProcCreds(readFileSync('/proc/self/status'))!
    expect(c.uids[1]).toBe(process.geteuid!())
    expect(c.gids[1]).toBe(process.getegid!())
  })
})

describe('sameProcCreds', () => {
  const was = parseProcCreds(Buffer.from(STATUS))!
  it.each([
    { title: 'the same lines, other fields changed', text: STATUS.replace('FDSize:\t64', 'FDSize:\t128').replace('Umask:\t0022', 'Umask:\t0077'), same: true },
    { title: 'real uid changed', text: STATUS.replace('Uid:\t1\t2', 'Uid:\t0\t2'), same: false },
    { title: 'saved uid changed', text: STATUS.replace('Uid:\t1\t2\t3', 'Uid:\t1\t2\t0'), same: false },
    { title: 'filesystem gid changed', text: STATUS.replace('7\t8', '7\t0'), same: false },
    { title: 'a group added', text: STATUS.replace('9 10 ', '9 10 11 '), same: false },
    { title: 'the Groups line missing', text: STATUS.replace(/Groups:.*\n/, ''), same: false },
  ])('$title: $same', ({ text, same }) => {
    expect(sameProcCreds(was, Buffer.from(text))).toBe(same)
  })
})
