// NVM I/O commands on RAM and file namespaces: data through PRP layouts, the status of each bad
// command, MDTS, Write Zeroes and deallocate, and when a write is made durable (fdatasync).

import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FileStore, MemoryStore } from './backing-store';
import { DNR, SC } from './defs';
import { TestHost } from './testing';

const READ = 0x02;
const WRITE = 0x01;
const FLUSH = 0x00;
const WRITE_ZEROES = 0x08;
const DSM = 0x09;

function ready(config: Record<string, unknown> = {}): TestHost {
  const h = new TestHost(config);
  h.enable();
  t_assert(h.createPair(1, 32).every((s) => s === 0));
  return h;
}

function t_assert(c: boolean): void {
  if (!c) throw new Error('setup failed');
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

const rw = (h: TestHost, opcode: number, slba: number, nlb: number, prp1: bigint, prp2 = 0n, extra: { nsid?: number; cdw12?: number } = {}) =>
  h.cmd(1, { opcode, nsid: extra.nsid ?? 1, prp1, prp2, cdw10: slba, cdw11: 0, cdw12: (nlb - 1) | (extra.cdw12 ?? 0) }).status;

function store(h: TestHost, nsid = 1): MemoryStore {
  return h.dev.namespaces[nsid - 1].store as MemoryStore;
}

test('a write lands in the store at SLBA x 512 and reads back, through one page', (t) => {
  const h = ready();
  const buf = h.alloc(4096);
  const data = pattern(4096, 1);
  h.ram.set(data, Number(buf));
  t.is(rw(h, WRITE, 10, 8, buf), 0);
  t.deepEqual(store(h).bytes.subarray(5120, 5120 + 4096), data);
  h.ram.fill(0, Number(buf), Number(buf) + 4096);
  t.is(rw(h, READ, 10, 8, buf), 0);
  t.deepEqual(h.ram.subarray(Number(buf), Number(buf) + 4096), data);
});

test('reads and writes through an unaligned first page, a second page, and a PRP list', (t) => {
  const h = ready();
  const pages = [h.alloc(4096), h.alloc(8192) + 4096n, h.alloc(4096), h.alloc(4096)];
  const list = h.alloc(4096);
  pages.slice(1).forEach((p, i) => h.view.setBigUint64(Number(list) + 8 * i, p, true));
  const data = pattern(0xe00 + 3 * 4096 - 0x600, 2);
  // PRP1 at offset 0x200 of its page: 0xe00 bytes there, then three list pages.
  const len = 0x200 * 0 + data.length;
  const nlb = len / 512;
  t.is(len % 512, 0);
  const first = pages[0] + 0x200n;
  let off = 0;
  const chunks = [[first, 0xe00], ...pages.slice(1).map((p) => [p, 4096] as const)] as [bigint, number][];
  for (const [gpa, n] of chunks) {
    const take = Math.min(n, data.length - off);
    h.ram.set(data.subarray(off, off + take), Number(gpa));
    off += take;
  }
  t.is(rw(h, WRITE, 100, nlb, first, list), 0);
  t.deepEqual(store(h).bytes.subarray(51200, 51200 + len), data);
  for (const [gpa, n] of chunks) h.ram.fill(0, Number(gpa), Number(gpa) + n);
  t.is(rw(h, READ, 100, nlb, first, list), 0);
  off = 0;
  const back = new Uint8Array(len);
  for (const [gpa, n] of chunks) {
    const take = Math.min(n, len - off);
    back.set(h.ram.subarray(Number(gpa), Number(gpa) + take), off);
    off += take;
  }
  t.deepEqual(back, data);
});

test('LBA out of range: SLBA past the end, a range crossing it, and a 64-bit SLBA', (t) => {
  const h = ready();
  const buf = h.alloc(4096);
  const blocks = 2048;
  t.is(rw(h, READ, blocks, 1, buf), SC.LBA_OUT_OF_RANGE | DNR);
  t.is(rw(h, WRITE, blocks - 4, 8, buf), SC.LBA_OUT_OF_RANGE | DNR);
  t.is(rw(h, READ, blocks - 8, 8, buf), 0, 'the last 8 blocks');
  t.is(h.cmd(1, { opcode: READ, nsid: 1, prp1: buf, cdw10: 0, cdw11: 1, cdw12: 0 }).status, SC.LBA_OUT_OF_RANGE | DNR, 'SLBA 2^32');
});

test('a transfer larger than MDTS is Invalid Field; MDTS 0 has no limit', (t) => {
  const h = ready({ mdts: 1, ram_size: 1 << 20 });
  const buf = h.alloc(3 * 4096);
  const list = h.alloc(4096);
  h.view.setBigUint64(Number(list), buf + 4096n, true);
  h.view.setBigUint64(Number(list) + 8, buf + 8192n, true);
  t.is(rw(h, READ, 0, 16, buf, buf + 4096n), 0, '8 KiB = 2^1 pages');
  t.is(rw(h, READ, 0, 17, buf, list), SC.INVALID_FIELD | DNR);
  const free = ready({ mdts: 0 });
  const big = free.alloc(64 * 4096);
  const l2 = free.alloc(4096);
  for (let i = 1; i < 64; i++) free.view.setBigUint64(Number(l2) + 8 * (i - 1), big + BigInt(i * 4096), true);
  t.is(rw(free, READ, 0, 512, big, l2), 0, '256 KiB');
});

test('an invalid namespace, an unknown opcode, fused and SGL commands on an I/O queue', (t) => {
  const h = ready();
  const buf = h.alloc(4096);
  for (const nsid of [0, 2, 0xffff_ffff]) t.is(rw(h, READ, 0, 1, buf, 0n, { nsid }), SC.INVALID_NAMESPACE | DNR, `nsid ${nsid}`);
  for (const opcode of [0x04, 0x05, 0x0c, 0x0d, 0x11, 0x15, 0x80, 0xff]) t.is(h.cmd(1, { opcode, nsid: 1 }).status, SC.INVALID_OPCODE | DNR, `opcode ${opcode}`);
  t.is(h.cmd(1, { opcode: READ, nsid: 1, prp1: buf, flags: 2 }).status, SC.INVALID_FIELD | DNR, 'fused');
  t.is(h.cmd(1, { opcode: READ, nsid: 1, prp1: buf, flags: 0x80 }).status, SC.INVALID_FIELD | DNR, 'SGL');
});

test('a read into memory outside guest RAM is a Data Transfer Error and writes nothing anywhere', (t) => {
  const h = ready();
  const inRam = h.alloc(4096);
  store(h).bytes.fill(0x99);
  const before = h.ram.slice();
  t.is(rw(h, READ, 0, 8, 0x7fff_0000n), SC.DATA_TRANSFER_ERROR | DNR);
  t.is(rw(h, READ, 0, 16, inRam, 0x10_0000_0000n), SC.DATA_TRANSFER_ERROR | DNR, 'the first page in RAM, the second not');
  // Only the host's submissions and the two completions differ.
  const q = h.queues.get(1)!;
  const outside = (i: number, base: bigint, len: number) => i < Number(base) || i >= Number(base) + len;
  let changed = 0;
  for (let i = 0; i < h.ram.length; i++) if (h.ram[i] !== before[i] && outside(i, q.cq, 32 * 16) && outside(i, q.sq, 32 * 64)) changed++;
  t.is(changed, 0);
});

test('Write Zeroes zeroes the range (with or without deallocate); out of range is refused', (t) => {
  const h = ready();
  store(h).bytes.fill(0x5a);
  t.is(h.cmd(1, { opcode: WRITE_ZEROES, nsid: 1, cdw10: 4, cdw12: 3 }).status, 0);
  t.is(h.cmd(1, { opcode: WRITE_ZEROES, nsid: 1, cdw10: 20, cdw12: 1 | (1 << 25) }).status, 0);
  const s = store(h).bytes;
  t.deepEqual([s[4 * 512 - 1], s[4 * 512], s[8 * 512 - 1], s[8 * 512]], [0x5a, 0, 0, 0x5a]);
  t.deepEqual([s[20 * 512], s[22 * 512 - 1], s[22 * 512]], [0, 0, 0x5a]);
  t.is(h.cmd(1, { opcode: WRITE_ZEROES, nsid: 1, cdw10: 2047, cdw12: 1 }).status, SC.LBA_OUT_OF_RANGE | DNR);
});

test('Dataset Management deallocate zeroes each range; one range out of bounds fails them all', (t) => {
  const h = ready();
  store(h).bytes.fill(0x77);
  const ranges = h.alloc(4096);
  const range = (i: number, slba: number, nlb: number) => {
    h.view.setUint32(Number(ranges) + 16 * i + 4, nlb, true);
    h.view.setBigUint64(Number(ranges) + 16 * i + 8, BigInt(slba), true);
  };
  range(0, 0, 2);
  range(1, 100, 1);
  t.is(h.cmd(1, { opcode: DSM, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 1 << 2 }).status, 0);
  const s = store(h).bytes;
  t.deepEqual([s[0], s[1023], s[1024], s[100 * 512], s[101 * 512]], [0, 0, 0x77, 0, 0x77]);
  s.fill(0x77);
  range(1, 2047, 2);
  t.is(h.cmd(1, { opcode: DSM, nsid: 1, prp1: ranges, cdw10: 1, cdw11: 1 << 2 }).status, SC.LBA_OUT_OF_RANGE | DNR);
  t.is(s[0], 0x77, 'nothing deallocated');
  t.is(h.cmd(1, { opcode: DSM, nsid: 1, prp1: ranges, cdw10: 0, cdw11: 1 }).status, 0, 'a read hint only: nothing to do');
  t.is(s[0], 0x77);
});

test('with the write cache on, writes wait for Flush; off, or with FUA, each write is flushed', (t) => {
  const h = ready();
  const buf = h.alloc(4096);
  const s = store(h);
  t.is(rw(h, WRITE, 0, 1, buf), 0);
  t.is(s.flushes, 0);
  t.is(h.cmd(1, { opcode: FLUSH, nsid: 1 }).status, 0);
  t.is(s.flushes, 1);
  t.is(rw(h, WRITE, 0, 1, buf, 0n, { cdw12: 1 << 30 }), 0, 'FUA');
  t.is(s.flushes, 2);
  t.is(h.admin({ opcode: 0x09, cdw10: 6, cdw11: 0 }).status, 0, 'write cache off');
  t.is(rw(h, WRITE, 0, 1, buf), 0);
  t.is(s.flushes, 3);
  t.is(h.cmd(1, { opcode: FLUSH, nsid: 5 }).status, SC.INVALID_NAMESPACE | DNR);
});

test('Flush with the broadcast NSID flushes every namespace; without a volatile cache it is a no-op', (t) => {
  const h = ready({ namespaces: [{}, {}] });
  t.is(h.cmd(1, { opcode: FLUSH, nsid: 0xffff_ffff }).status, 0);
  t.deepEqual([store(h, 1).flushes, store(h, 2).flushes], [1, 1]);
  const nc = ready({ volatile_write_cache: false });
  t.is(nc.cmd(1, { opcode: FLUSH, nsid: 1 }).status, 0);
  t.is(store(nc).flushes, 0);
  t.is(rw(nc, WRITE, 0, 1, nc.alloc(4096)), 0);
  t.is(store(nc).flushes, 1, 'no cache: the write itself is made durable');
});

test('a file image: created sparse with the size asked, data reaches the file, Flush fdatasyncs it', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-io-test-'));
  try {
    const image = path.join(dir, 'disk.img');
    const h = ready({ image, size: '1M' });
    t.is(fs.statSync(image).size, 1 << 20);
    t.true(fs.statSync(image).blocks * 512 < 1 << 20, 'sparse');
    const buf = h.alloc(8192);
    const data = pattern(8192, 9);
    h.ram.set(data, Number(buf));
    t.is(rw(h, WRITE, 7, 16, buf, buf + 4096n), 0);
    t.is(h.cmd(1, { opcode: FLUSH, nsid: 1 }).status, 0);
    t.is((h.dev.namespaces[0].store as FileStore).flushes, 1);
    const file = fs.readFileSync(image);
    t.deepEqual(new Uint8Array(file.subarray(7 * 512, 7 * 512 + 8192)), data);
    h.ram.fill(0, Number(buf), Number(buf) + 8192);
    t.is(rw(h, READ, 7, 16, buf, buf + 4096n), 0);
    t.deepEqual(h.ram.subarray(Number(buf), Number(buf) + 8192), data);
    t.is(h.cmd(1, { opcode: WRITE_ZEROES, nsid: 1, cdw10: 8, cdw12: 1 | (1 << 25) }).status, 0, 'punched');
    const after = fs.readFileSync(image);
    t.is(after.subarray(8 * 512, 10 * 512).every((b) => b === 0), true);
    t.is(after[7 * 512], data[0]);
    h.dev.namespaces[0].store.close();
    // An existing image keeps its size whatever size says.
    const again = new TestHost({ image, size: '4M' });
    t.is(again.dev.namespaces[0].blocks, 2048);
    again.dev.namespaces[0].store.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a store that fails I/O gives media errors, counted in SMART', (t) => {
  const h = ready();
  const s = store(h);
  s.read = () => false;
  s.write = () => false;
  const buf = h.alloc(4096);
  t.is(rw(h, READ, 0, 1, buf), SC.UNRECOVERED_READ_ERROR);
  t.is(rw(h, WRITE, 0, 1, buf), SC.WRITE_FAULT);
  t.is(h.dev.smart.mediaErrors, 2);
});
