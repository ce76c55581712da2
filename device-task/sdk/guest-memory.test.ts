// GuestMemoryDma bounds: accesses inside guest RAM work, anything touching a byte outside is
// refused (false / undefined) and changes nothing, across one or several regions.

import test from 'ava';
import { GuestMemoryDma } from './guest-memory';

const KiB = 1024;

function oneRegion() {
  const bytes = new Uint8Array(4 * KiB);
  return { bytes, mem: new GuestMemoryDma([{ gpa: 0x1000n, bytes }]) };
}

test('inside the region: read, write, view and the u32/u64 helpers see the same bytes', (t) => {
  const { bytes, mem } = oneRegion();
  t.true(mem.write(0x1010n, Uint8Array.of(1, 2, 3, 4)));
  t.deepEqual([...bytes.subarray(0x10, 0x14)], [1, 2, 3, 4]);
  const out = new Uint8Array(4);
  t.true(mem.read(0x1010n, out));
  t.deepEqual([...out], [1, 2, 3, 4]);
  t.is(mem.readU32(0x1010n), 0x04030201);
  t.true(mem.writeU64(0x1ff8n, 0x1122334455667788n), 'the last 8 bytes');
  t.is(mem.readU64(0x1ff8n), 0x1122334455667788n);
  t.is(bytes[0xfff], 0x11);
  const v = mem.view(0x1000n, 4 * KiB);
  t.is(v?.length, 4 * KiB);
  v![0] = 0xaa;
  t.is(bytes[0], 0xaa, 'view is live, not a copy');
});

test('an access straddling the end of guest RAM is refused and writes nothing', (t) => {
  const { bytes, mem } = oneRegion();
  t.false(mem.write(0x1ffen, Uint8Array.of(9, 9, 9, 9)));
  t.is(bytes[0xffe], 0);
  t.is(bytes[0xfff], 0);
  t.false(mem.writeU64(0x1ff9n, ~0n));
  t.deepEqual([...bytes.subarray(0xff0)], new Array(16).fill(0));
  t.is(mem.readU64(0x1ff9n), undefined);
  t.is(mem.readU32(0x1ffdn), undefined);
  const out = new Uint8Array(4).fill(7);
  t.false(mem.read(0x1ffen, out));
  t.deepEqual([...out], [7, 7, 7, 7], 'a refused read leaves the buffer alone');
  t.is(mem.view(0x1000n, 4 * KiB + 1), undefined);
});

test('an access straddling the start of guest RAM is refused', (t) => {
  const { mem } = oneRegion();
  t.is(mem.readU32(0xffen), undefined);
  t.false(mem.writeU32(0xffen, 1));
});

test('beyond guest RAM, at huge and negative addresses and with a negative length: refused, never thrown', (t) => {
  const { mem } = oneRegion();
  t.is(mem.readU64(0x2000n), undefined, 'the first byte after the end');
  t.is(mem.readU64(0n), undefined, 'below the region');
  t.is(mem.readU64(0xffff_ffff_ffff_fff8n), undefined);
  t.is(mem.readU64(0xffff_ffff_ffff_ffffn), undefined, 'gpa + len overflows u64');
  t.is(mem.readU64(-8n), undefined);
  t.is(mem.readU64(-0x1000n), undefined);
  t.false(mem.writeU64(2n ** 70n, 1n));
  t.is(mem.view(0x1000n, -1), undefined);
});

test('a zero-length access inside RAM is allowed, outside it is not', (t) => {
  const { mem } = oneRegion();
  t.true(mem.read(0x1000n, new Uint8Array(0)));
  t.true(mem.write(0x2000n, new Uint8Array(0)), 'the end address itself holds zero bytes');
  t.false(mem.write(0x5000n, new Uint8Array(0)));
});

test('several regions: each is addressed by its own GPA; an access spanning two adjacent regions is refused', (t) => {
  const low = new Uint8Array(0x1000);
  const high = new Uint8Array(0x1000);
  const mem = new GuestMemoryDma([{ gpa: 0x0n, bytes: low }, { gpa: 0x1000n, bytes: high }, { gpa: 0x1_0000_0000n, bytes: new Uint8Array(16) }]);
  t.true(mem.writeU32(0xffcn, 0xdeadbeef));
  t.true(mem.writeU32(0x1000n, 0xcafef00d));
  t.is(low[0xffc], 0xef);
  t.is(high[0], 0x0d);
  t.is(mem.readU64(0xffcn), undefined, 'contiguous GPAs, but two regions: no single view holds it');
  t.false(mem.writeU64(0xffcn, 0n));
  t.is(mem.readU32(0xffcn), 0xdeadbeef, 'the refused write changed nothing');
  t.true(mem.writeU64(0x1_0000_0008n, 5n), 'a region above 4 GiB');
  t.is(mem.readU64(0x1_0000_0008n), 5n);
  t.is(mem.readU64(0x1_0000_0010n), undefined);
});

test('no regions at all: every access is refused', (t) => {
  const mem = new GuestMemoryDma([]);
  t.is(mem.readU64(0n), undefined);
  t.false(mem.write(0n, Uint8Array.of(1)));
});

test('writeU64 and writeU32 store the value modulo their width', (t) => {
  const { mem } = oneRegion();
  t.true(mem.writeU64(0x1000n, -1n));
  t.is(mem.readU64(0x1000n), 0xffff_ffff_ffff_ffffn);
  t.true(mem.writeU64(0x1000n, (1n << 64n) + 3n));
  t.is(mem.readU64(0x1000n), 3n);
  t.true(mem.writeU32(0x1000n, -1));
  t.is(mem.readU32(0x1000n), 0xffff_ffff);
});
