// The PRP walker against hand-built PRP lists in plain memory: every layout the specification allows,
// and each way a host can get one wrong.

import test from 'ava';
import { GuestMemoryDma } from '../../sdk/guest-memory';
import { SC } from './defs';
import { walkPrps } from './prp';

const P = 4096;
const RAM = 1 << 20;

function memory(): { mem: GuestMemoryDma; view: DataView } {
  const bytes = new Uint8Array(RAM);
  return { mem: new GuestMemoryDma([{ gpa: 0n, bytes }]), view: new DataView(bytes.buffer) };
}

/** The walk as [gpa, length] pairs. */
function pieces(r: ReturnType<typeof walkPrps>): [number, number][] {
  return r.segments.map((s) => [Number(s.gpa), s.bytes.length]);
}

function list(view: DataView, at: number, entries: number[]): void {
  entries.forEach((e, i) => view.setBigUint64(at + 8 * i, BigInt(e), true));
}

test('a transfer within PRP1\'s page needs no PRP2 (PRP2 is ignored)', (t) => {
  const { mem } = memory();
  const r = walkPrps(mem, 0x3000n, 0xdead_beefn, 512, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[0x3000, 512]]);
});

test('a zero-length transfer names no memory at all', (t) => {
  const { mem } = memory();
  t.deepEqual(walkPrps(mem, 0xffff_ffff_0000n, 0n, 0, P), { status: 0, segments: [] });
});

test('an unaligned PRP1 runs to the end of its page, PRP2 holds the second page', (t) => {
  const { mem } = memory();
  const r = walkPrps(mem, 0x5f00n, 0x9000n, 4096, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[0x5f00, 0x100], [0x9000, 0xf00]]);
});

test('two physically adjacent pages come back as one segment', (t) => {
  const { mem } = memory();
  const r = walkPrps(mem, 0x4000n, 0x5000n, 8192, P);
  t.deepEqual(pieces(r), [[0x4000, 8192]]);
});

test('more than two pages use a PRP list; scattered pages stay separate segments', (t) => {
  const { mem, view } = memory();
  list(view, 0x20000, [0x30000, 0x32000, 0x31000]);
  const r = walkPrps(mem, 0x10000n, 0x20000n, 4 * P, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[0x10000, P], [0x30000, P], [0x32000, P], [0x31000, P]]);
});

test('a PRP list may start mid-page (qword aligned) and the last page may be partial', (t) => {
  const { mem, view } = memory();
  list(view, 0x20ff0, [0x30000, 0x40000]);
  const r = walkPrps(mem, 0x10800n, 0x20ff0n, 0x800 + P + 100, P);
  t.deepEqual(pieces(r), [[0x10800, 0x800], [0x30000, P], [0x40000, 100]]);
});

test('a list that runs out of its page chains through its last slot to the next list page', (t) => {
  const { mem, view } = memory();
  // Two slots left in the first list page: one data entry, then the pointer to the next list page.
  list(view, 0x20ff0, [0x30000, 0x50000]);
  list(view, 0x50000, [0x32000, 0x34000]);
  const r = walkPrps(mem, 0x10000n, 0x20ff0n, 4 * P, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[0x10000, P], [0x30000, P], [0x32000, P], [0x34000, P]]);
});

test('the last slot of a full list page is data when it is the final entry (no chain needed)', (t) => {
  const { view } = memory();
  // 512 entries fill the page exactly: PRP1's page plus 512 list pages.
  const entries = Array.from({ length: 512 }, (_, i) => 0x40000 + i * P);
  list(view, 0x20000, entries);
  const big = new Uint8Array(0x40000 + 512 * P);
  const mem2 = new GuestMemoryDma([{ gpa: 0n, bytes: big }]);
  new Uint8Array(big.buffer).set(new Uint8Array(view.buffer, 0x20000, P), 0x20000);
  const r = walkPrps(mem2, 0x10000n, 0x20000n, 513 * P, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[0x10000, P], [0x40000, 512 * P]]);
});

test('chains of several list pages, with an 8 KiB memory page size', (t) => {
  const { mem, view } = memory();
  const page = 8192;
  // A list starting in the last qword of its page holds only the chain pointer.
  list(view, 0x21ff8, [0x24000]);
  // A full page: 1023 data entries (all the same page) and the pointer to the third list page.
  list(view, 0x24000, Array.from({ length: 1023 }, () => 0x80000));
  view.setBigUint64(0x24000 + 8 * 1023, 0x26000n, true);
  list(view, 0x26000, [0x84000, 0x88000]);
  const r = walkPrps(mem, 0x10000n, 0x21ff8n, page * (1 + 1025), page);
  t.is(r.status, 0);
  t.is(r.segments.length, 1 + 1023 + 2, 'PRP1, 1023 entries of the second list page, 2 of the third');
  t.is(r.segments.reduce((n, s) => n + s.bytes.length, 0), page * 1026);
  t.deepEqual(pieces(r).slice(-2), [[0x84000, page], [0x88000, page]]);
});

test('PRP1 that is not dword aligned is Invalid PRP Offset', (t) => {
  const { mem } = memory();
  t.is(walkPrps(mem, 0x1002n, 0n, 16, P).status, SC.INVALID_PRP_OFFSET);
});

test('a second page (PRP2) with an offset is Invalid PRP Offset', (t) => {
  const { mem } = memory();
  t.is(walkPrps(mem, 0x1000n, 0x2200n, 2 * P, P).status, SC.INVALID_PRP_OFFSET);
});

test('a PRP list pointer that is not qword aligned is Invalid PRP Offset', (t) => {
  const { mem } = memory();
  t.is(walkPrps(mem, 0x1000n, 0x2004n, 3 * P, P).status, SC.INVALID_PRP_OFFSET);
});

test('a list entry with an offset is Invalid PRP Offset', (t) => {
  const { mem, view } = memory();
  list(view, 0x20000, [0x30000, 0x31010]);
  t.is(walkPrps(mem, 0x10000n, 0x20000n, 3 * P, P).status, SC.INVALID_PRP_OFFSET);
});

test('a chain pointer that is not page aligned is Invalid PRP Offset', (t) => {
  const { mem, view } = memory();
  list(view, 0x20ff0, [0x30000, 0x50008]);
  t.is(walkPrps(mem, 0x10000n, 0x20ff0n, 4 * P, P).status, SC.INVALID_PRP_OFFSET);
});

test('data outside guest RAM is a Data Transfer Error, wherever it is named', (t) => {
  const { mem, view } = memory();
  t.is(walkPrps(mem, BigInt(RAM), 0n, 512, P).status, SC.DATA_TRANSFER_ERROR, 'PRP1 past the end');
  t.is(walkPrps(mem, 0x1000n, 0xffff_ffff_f000n, 2 * P, P).status, SC.DATA_TRANSFER_ERROR, 'PRP2 page');
  list(view, 0x20000, [0x30000, 0x1_0000_0000]);
  t.is(walkPrps(mem, 0x10000n, 0x20000n, 3 * P, P).status, SC.DATA_TRANSFER_ERROR, 'a list entry');
  t.is(walkPrps(mem, 0x10000n, 0x7fff_0000n, 3 * P, P).status, SC.DATA_TRANSFER_ERROR, 'the list itself');
});

test('a transfer that ends exactly at the end of guest RAM is fine', (t) => {
  const { mem } = memory();
  const r = walkPrps(mem, BigInt(RAM - P), 0n, P, P);
  t.is(r.status, 0);
  t.deepEqual(pieces(r), [[RAM - P, P]]);
});

test('a self-referencing chain still ends: each list page consumes entries', (t) => {
  const { mem, view } = memory();
  // Every slot of page 0x20000 points at 0x30000 except the last, which points back at the page itself.
  list(view, 0x20000, Array.from({ length: 511 }, () => 0x30000));
  view.setBigUint64(0x20000 + 8 * 511, 0x20000n, true);
  const r = walkPrps(mem, 0x10000n, 0x20000n, 2000 * P, P);
  t.is(r.status, 0);
  t.is(r.segments.reduce((n, s) => n + s.bytes.length, 0), 2000 * P);
});
