// RegisterSpace in memory: partial and odd accesses, writable masks, write-1-to-clear, side effects,
// overlap rejection and the count of accesses no register claimed.

import test from 'ava';
import { RegisterSpace } from './register-space';

function space() {
  const writes: bigint[] = [];
  let live = 0n;
  const regs = new RegisterSpace([
    { name: 'ID', offset: 0x0, size: 4, reset: 0x11223344n, writable: 0n },
    { name: 'DATA', offset: 0x8, size: 8, reset: 0x8877665544332211n },
    { name: 'MASKED', offset: 0x10, size: 4, writable: 0x0000ff0fn },
    { name: 'STATUS', offset: 0x14, size: 4, reset: 0xf0n, w1c: 0x0fn, writable: 0n },
    { name: 'MIXED', offset: 0x30, size: 4, w1c: 0x0fn, writable: 0xf0n },
    { name: 'CTRL', offset: 0x18, size: 2, onWrite: (v) => writes.push(v) },
    { name: 'LIVE', offset: 0x20, size: 8, writable: 0n, onRead: () => ++live },
    { name: 'BYTE', offset: 0x28, size: 1, reset: 0x1ffn },
  ]);
  return { regs, writes, liveReads: () => live };
}

test('a read of part of a register returns the addressed bytes, little-endian', (t) => {
  const { regs } = space();
  t.is(regs.read(0x8n, 8), 0x8877665544332211n);
  t.is(regs.read(0x8n, 1), 0x11n);
  t.is(regs.read(0x9n, 1), 0x22n);
  t.is(regs.read(0xan, 2), 0x4433n);
  t.is(regs.read(0xcn, 4), 0x88776655n);
  t.is(regs.read(0xfn, 1), 0x88n);
  t.is(regs.read(0x1n, 2), 0x2233n, 'an odd offset inside a register is fine');
  t.is(regs.unclaimed, 0);
});

test('a partial write changes only its bytes', (t) => {
  const { regs } = space();
  regs.write(0xan, 2, 0xbeefn);
  t.is(regs.get('DATA'), 0x88776655beef2211n);
  regs.write(0xfn, 1, 0x01n);
  t.is(regs.read(0x8n, 8), 0x01776655beef2211n);
  regs.write(0x8n, 1, 0x1ffn);
  t.is(regs.get('DATA') & 0xffffn, 0x22ffn, 'value bits beyond the access size are dropped, not carried into the next byte');
});

test('reset values are truncated to the register size', (t) => {
  const { regs } = space();
  t.is(regs.get('BYTE'), 0xffn);
  t.is(regs.read(0x28n, 1), 0xffn);
});

test('accesses straddling two registers, past the end, or in a hole read 0, are ignored and counted', (t) => {
  const { regs } = space();
  t.is(regs.read(0x6n, 4), 0n, 'straddles the hole after ID and DATA');
  t.is(regs.read(0xen, 4), 0n, 'straddles DATA and MASKED');
  t.is(regs.read(0x4n, 4), 0n, 'a hole');
  t.is(regs.read(0x1000n, 8), 0n, 'past every register');
  t.is(regs.read(0xffff_ffff_ffff_fff8n, 8), 0n, 'a huge offset');
  t.is(regs.read(-8n, 8), 0n, 'a negative offset');
  t.is(regs.unclaimed, 6);
  regs.write(0xen, 4, 0xffff_ffffn);
  regs.write(0x2n, 4, 0xffff_ffffn);
  t.is(regs.unclaimed, 8);
  t.is(regs.get('DATA'), 0x8877665544332211n, 'a straddling write changes neither register');
  t.is(regs.get('MASKED'), 0n);
  t.is(regs.get('ID'), 0x11223344n);
});

test('the writable mask keeps read-only bits', (t) => {
  const { regs } = space();
  regs.write(0x0n, 4, 0xffff_ffffn);
  t.is(regs.read(0x0n, 4), 0x11223344n, 'writable 0: read-only');
  regs.write(0x10n, 4, 0xffff_ffffn);
  t.is(regs.get('MASKED'), 0x0000ff0fn);
  regs.write(0x10n, 4, 0n);
  t.is(regs.get('MASKED'), 0n);
  regs.write(0x11n, 1, 0xabn);
  t.is(regs.get('MASKED'), 0x0000ab00n, 'a partial write under a mask');
});

test('write-1-to-clear bits clear on 1, stay on 0, and cannot be set by the guest', (t) => {
  const { regs } = space();
  regs.set('STATUS', 0xffn);
  regs.write(0x14n, 4, 0x05n);
  t.is(regs.get('STATUS'), 0xfan, 'bits 0 and 2 cleared, the rest kept');
  regs.write(0x14n, 4, 0x00n);
  t.is(regs.get('STATUS'), 0xfan, 'writing 0 clears nothing');
  regs.write(0x14n, 4, 0x0fn);
  t.is(regs.get('STATUS'), 0xf0n);
  regs.write(0x14n, 4, 0x0fn);
  t.is(regs.get('STATUS'), 0xf0n, 'writing 1 to a clear w1c bit does not set it');
  regs.write(0x14n, 4, 0x30n);
  t.is(regs.get('STATUS'), 0xf0n, 'read-only bits beside the w1c ones stay');
  regs.set('MIXED', 0x0fn);
  regs.write(0x30n, 4, 0x35n);
  t.is(regs.get('MIXED'), 0x3an, 'writable bits beside w1c ones are written normally while 1s clear the w1c bits');
  regs.set('STATUS', 0x0fn);
  regs.write(0x15n, 1, 0xffn);
  t.is(regs.get('STATUS'), 0x0fn, 'a w1c write to another byte lane clears nothing in this one');
});

test('onWrite sees the new value after masks; onRead supplies the value of every read', (t) => {
  const { regs, writes, liveReads } = space();
  regs.write(0x18n, 2, 0x1234n);
  regs.write(0x19n, 1, 0xabn);
  t.deepEqual(writes, [0x1234n, 0xab34n]);
  t.is(regs.read(0x20n, 8), 1n);
  t.is(regs.read(0x20n, 8), 2n);
  t.is(regs.read(0x21n, 1), 0n, 'byte 1 of the live value 3');
  t.is(liveReads(), 3n);
  t.is(regs.read(0x6n, 4), 0n);
  t.is(liveReads(), 3n, 'an unclaimed access calls no onRead');
  t.deepEqual(writes, [0x1234n, 0xab34n], 'an unclaimed write calls no onWrite');
});

test('reset() restores every reset value', (t) => {
  const { regs } = space();
  regs.write(0x8n, 8, 0n);
  regs.write(0x10n, 4, 0xffn);
  regs.set('STATUS', 0n);
  regs.reset();
  t.is(regs.get('DATA'), 0x8877665544332211n);
  t.is(regs.get('MASKED'), 0n);
  t.is(regs.get('STATUS'), 0xf0n);
});

test('overlapping register definitions are rejected naming both, in any order', (t) => {
  t.throws(() => new RegisterSpace([{ name: 'A', offset: 0, size: 8 }, { name: 'B', offset: 4, size: 4 }]), { message: /A and B overlap/ });
  t.throws(() => new RegisterSpace([{ name: 'B', offset: 7, size: 1 }, { name: 'A', offset: 0, size: 8 }]), { message: /A and B overlap/ });
  t.notThrows(() => new RegisterSpace([{ name: 'A', offset: 0, size: 4 }, { name: 'B', offset: 4, size: 4 }]), 'adjacent is fine');
});

test('get and set name unknown registers in their errors', (t) => {
  const { regs } = space();
  t.throws(() => regs.get('NOPE'), { message: /no register NOPE/ });
  t.throws(() => regs.set('NOPE', 1n), { message: /no register NOPE/ });
  regs.set('BYTE', 0x1234n);
  t.is(regs.get('BYTE'), 0x34n, 'set truncates to the register size');
});
