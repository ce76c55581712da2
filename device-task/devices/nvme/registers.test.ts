// BAR0 register semantics: CAP/VS contents, accesses of every width, the CC.EN / CSTS.RDY handshake and
// what makes it fatal (CSTS.CFS), controller reset, shutdown, INTMS/INTMC, and accesses nobody decodes.

import test from 'ava';
import { fakeDeviceContext } from '../../sdk/conformance';
import { REG } from './defs';
import { nvme } from './index';
import { ACQ, ASQ, TestHost } from './testing';

const CC_IO = (4 << 20) | (6 << 16);

test('CAP advertises what is implemented: MQES, CQR, WRR, TO, DSTRD 0, NVM, MPSMIN 0, MPSMAX 4', (t) => {
  const h = new TestHost();
  const cap = h.read(REG.CAP, 8);
  t.is(cap & 0xffffn, 1023n, 'MQES (0\'s based) from queue_entries 1024');
  t.is((cap >> 16n) & 1n, 1n, 'CQR');
  t.is((cap >> 17n) & 3n, 1n, 'AMS: weighted round robin');
  t.is((cap >> 24n) & 0xffn, 1n, 'TO: 500 ms');
  t.is((cap >> 32n) & 0xfn, 0n, 'DSTRD');
  t.is((cap >> 36n) & 1n, 0n, 'NSSRS');
  t.is((cap >> 37n) & 0xffn, 1n, 'CSS: NVM only');
  t.is((cap >> 48n) & 0xfn, 0n, 'MPSMIN');
  t.is((cap >> 52n) & 0xfn, 4n, 'MPSMAX');
  t.is((cap >> 56n) & 3n, 0n, 'no PMR, no CMB');
  const small = new TestHost({ queue_entries: 64, weighted_round_robin: false });
  t.is(small.read(REG.CAP, 8) & 0x7ffffn, 63n | (1n << 16n), 'MQES 63, CQR, no WRR');
});

test('CAP reads the same as one 8-byte access, two 4-byte halves, or bytes', (t) => {
  const h = new TestHost();
  const cap = h.read(REG.CAP, 8);
  t.is((h.read(REG.CAP + 4, 4) << 32n) | h.read(REG.CAP, 4), cap);
  let bytes = 0n;
  for (let i = 7; i >= 0; i--) bytes = (bytes << 8n) | h.read(REG.CAP + i, 1);
  t.is(bytes, cap);
  t.is(h.read(REG.CAP + 2, 2), (cap >> 16n) & 0xffffn);
});

test('VS is 1.4.0; CAP and VS ignore writes', (t) => {
  const h = new TestHost();
  const cap = h.read(REG.CAP, 8);
  h.write(REG.CAP, 0n, 8);
  h.write(REG.VS, 0x20000);
  t.is(h.read(REG.VS), 0x10400n);
  t.is(h.read(REG.CAP, 8), cap);
});

test('AQA keeps only its defined bits; ASQ/ACQ drop the low 12 bits; halves combine', (t) => {
  const h = new TestHost();
  h.write(REG.AQA, 0xffff_ffff);
  t.is(h.read(REG.AQA), 0x0fff_0fffn);
  h.write(REG.ASQ, 0x1234_5678);
  h.write(REG.ASQ + 4, 0x9abc);
  t.is(h.read(REG.ASQ, 8), 0x9abc_1234_5000n);
  h.write(REG.ACQ, 0x1_2345_6fffn, 8);
  t.is(h.read(REG.ACQ, 8), 0x1_2345_6000n);
});

test('CC.EN 0 -> 1 with valid settings sets CSTS.RDY at once', (t) => {
  const h = new TestHost();
  t.is(h.csts(), 0);
  h.enable();
  t.is(h.csts(), 1);
  t.is(h.read(REG.CC) & 1n, 1n);
});

test('writing CC with EN = 0 first (as Linux does) starts nothing; EN then starts the controller', (t) => {
  const h = new TestHost();
  h.write(REG.AQA, (15 << 16) | 15);
  h.write(REG.ASQ, ASQ, 8);
  h.write(REG.ACQ, ACQ, 8);
  h.write(REG.CC, CC_IO);
  t.is(h.csts(), 0);
  h.write(REG.CC, CC_IO | 1);
  t.is(h.csts(), 1);
});

test('entry sizes may be left 0 at enable (set before creating I/O queues)', (t) => {
  const h = new TestHost();
  h.write(REG.AQA, (3 << 16) | 3);
  h.write(REG.ASQ, ASQ, 8);
  h.write(REG.ACQ, ACQ, 8);
  h.write(REG.CC, 1);
  t.is(h.csts(), 1);
});

const fatalCases: [string, (h: TestHost) => void][] = [
  ['MPS above MPSMAX', (h) => h.write(REG.CC, CC_IO | (5 << 7) | 1)],
  ['CSS 7 (admin only, not advertised)', (h) => h.write(REG.CC, CC_IO | (7 << 4) | 1)],
  ['CSS 6 (I/O command sets, not advertised)', (h) => h.write(REG.CC, CC_IO | (6 << 4) | 1)],
  ['AMS vendor specific', (h) => h.write(REG.CC, CC_IO | (7 << 11) | 1)],
  ['IOSQES 5', (h) => h.write(REG.CC, (4 << 20) | (5 << 16) | 1)],
  ['IOCQES 6', (h) => h.write(REG.CC, (6 << 20) | (6 << 16) | 1)],
  ['ASQS 0 (a one-entry admin SQ)', (h) => {
    h.write(REG.AQA, 15 << 16);
    h.write(REG.CC, CC_IO | 1);
  }],
  ['ACQS 0', (h) => {
    h.write(REG.AQA, 15);
    h.write(REG.CC, CC_IO | 1);
  }],
  ['ASQ not aligned to the 8 KiB page selected', (h) => {
    h.write(REG.ASQ, ASQ + 0x1000n, 8);
    h.write(REG.CC, CC_IO | (1 << 7) | 1);
  }],
  ['ACQ outside guest RAM', (h) => {
    h.write(REG.ACQ, 0x10_0000_0000n, 8);
    h.write(REG.CC, CC_IO | 1);
  }],
  ['the admin SQ running past the end of guest RAM', (h) => {
    h.write(REG.ASQ, BigInt((4 << 20) - 4096), 8);
    h.write(REG.AQA, (15 << 16) | 127);
    h.write(REG.CC, CC_IO | 1);
  }],
];

for (const [what, enable] of fatalCases) {
  test(`CC.EN with ${what} sets CSTS.CFS and leaves RDY clear; EN = 0 clears CFS`, (t) => {
    const h = new TestHost();
    h.write(REG.AQA, (15 << 16) | 15);
    h.write(REG.ASQ, ASQ, 8);
    h.write(REG.ACQ, ACQ, 8);
    enable(h);
    t.is(h.csts(), 2);
    h.write(REG.CC, 0);
    t.is(h.csts(), 0);
  });
}

test('AMS 1 (weighted round robin) is accepted when advertised, fatal when not', (t) => {
  const h = new TestHost();
  h.enable(16, 1 << 11);
  t.is(h.csts(), 1);
  const rr = new TestHost({ weighted_round_robin: false });
  rr.enable(16, 1 << 11);
  t.is(rr.csts(), 2);
});

test('an 8 KiB memory page size works for the admin queue', (t) => {
  const h = new TestHost();
  h.enable(16, 1 << 7);
  t.is(h.csts(), 1);
  const buf = h.alloc(8192, 8192);
  t.is(h.admin({ opcode: 0x06, prp1: buf, cdw10: 1 }).status, 0);
});

test('CC.EN 1 -> 0 resets: RDY clears, queues are gone, AQA/ASQ/ACQ keep their values', (t) => {
  const h = new TestHost();
  h.enable();
  t.deepEqual(h.createPair(1), [0, 0]);
  h.write(REG.INTMS, 0x6);
  h.write(REG.CC, CC_IO);
  t.is(h.csts(), 0);
  t.is(h.read(REG.AQA), (15n << 16n) | 15n);
  t.is(h.read(REG.ASQ, 8), ASQ);
  t.is(h.read(REG.ACQ, 8), ACQ);
  t.is(h.read(REG.INTMS), 0n, 'the interrupt mask is cleared');
  h.enable();
  t.is(h.csts(), 1);
  // The I/O queue is gone: creating it again works, which it would not if it still existed.
  t.deepEqual(h.createPair(1), [0, 0]);
});

test('CC.SHN normal: the stores are flushed and SHST reads complete; clearing SHN clears SHST', (t) => {
  const h = new TestHost();
  h.enable();
  const flushes = h.dev.namespaces[0].store.flushes;
  h.write(REG.CC, CC_IO | (1 << 14) | 1);
  t.is(h.csts(), 1 | (2 << 2), 'RDY still set, SHST = 10b');
  t.is(h.dev.namespaces[0].store.flushes, flushes + 1);
  // After a shutdown nothing runs until a reset.
  const cid = h.queue(0, { opcode: 0x06, prp1: h.alloc(4096), cdw10: 1 });
  h.ringSq(0);
  t.deepEqual(h.reap(0), [], `no completion for cid ${cid} after shutdown`);
  h.write(REG.CC, CC_IO | 1);
  t.is(h.csts(), 1, 'SHN 0: SHST back to normal');
  h.write(REG.CC, CC_IO);
  h.enable();
  t.is(h.admin({ opcode: 0x06, prp1: h.alloc(4096), cdw10: 1 }).status, 0, 'usable again after a reset');
});

test('CC.SHN abrupt also flushes and completes', (t) => {
  const h = new TestHost();
  h.enable();
  h.write(REG.CC, CC_IO | (2 << 14) | 1);
  t.is((h.csts() >> 2) & 3, 2);
  t.is(h.dev.namespaces[0].store.flushes, 1);
});

test('CSTS ignores writes (NSSRO is write-1-to-clear and never set here)', (t) => {
  const h = new TestHost();
  h.enable();
  h.write(REG.CSTS, 0xffff_ffff);
  t.is(h.csts(), 1);
});

test('INTMS sets mask bits, INTMC clears them, both read the mask', (t) => {
  const h = new TestHost();
  h.write(REG.INTMS, 0b1010);
  h.write(REG.INTMS, 0b0100);
  t.is(h.read(REG.INTMS), 0b1110n);
  t.is(h.read(REG.INTMC), 0b1110n);
  h.write(REG.INTMC, 0b0110);
  t.is(h.read(REG.INTMS), 0b1000n);
  h.write(REG.INTMS + 3, 0x80, 1);
  t.is(h.read(REG.INTMC), 0x8000_0008n, 'a byte write masks that byte\'s vectors only');
});

test('NSSR, CMBLOC, CMBSZ and the PMR registers read 0 (not supported)', (t) => {
  const h = new TestHost();
  h.write(REG.NSSR, 0x4e56_4d65);
  for (const off of [REG.NSSR, REG.CMBLOC, REG.CMBSZ, 0xe00, 0xe04, 0xe08, 0xe14]) t.is(h.read(off), 0n, `0x${off.toString(16)}`);
});

test('doorbells read as 0 and accesses past BAR0 are ignored, at any width, without throwing', (t) => {
  const h = new TestHost();
  h.enable();
  for (const size of [1, 2, 4, 8]) {
    t.is(h.read(0x1000, size), 0n);
    t.is(h.dev.read(0x4000n, size, 0n), 0n);
    t.is(h.dev.read(0xffff_ffff_ffff_fff8n, size, 0n), 0n);
    h.dev.write(0x4000n, size, 1n, 0n);
    h.dev.write(0x3ffen, size, 1n, 0n);
  }
  t.is(h.csts(), 1);
  t.true(h.dev.stats.ignoredAccesses >= 12);
});

test('user_data is the region\'s offset inside BAR0: a doorbell region at 0x1000 reaches the doorbells', (t) => {
  const h = new TestHost();
  h.enable();
  const cid = h.queue(0, { opcode: 0x06, prp1: h.alloc(4096), cdw10: 1 });
  h.dev.write(0n, 4, 1n, 0x1000n);
  const got = h.reap(0);
  t.is(got.length, 1);
  t.is(got[0].cid, cid);
  t.is(h.dev.read(0x14n, 4, 0n), h.dev.read(0n, 4, 0x14n), 'CC through either user_data');
  t.is(h.dev.read(0n, 4, 0x5000n), 0n, 'a user_data past BAR0 decodes nothing');
});

test('a straddling register access is ignored (reads 0) and counted', (t) => {
  const h = new TestHost();
  const before = h.dev.stats.ignoredAccesses;
  t.is(h.read(REG.INTMS, 8), 0n, 'INTMS + INTMC in one access');
  h.write(REG.CC - 2, 0xffff_ffffn, 4);
  t.is(h.read(REG.CC), 0n);
  t.is(h.dev.stats.ignoredAccesses, before + 2);
});

test('a config the model cannot use is refused at create, naming the key', (t) => {
  for (const [config, key] of [
    [{ lba_size: 520 }, 'lba_size'], [{ queues: 0 }, 'queues'], [{ queue_entries: 1 }, 'queue_entries'], [{ mdts: 16 }, 'mdts'],
    [{ size: '12X' }, 'size'], [{ colour: 'red' }, 'colour'], [{ serial: '' }, 'serial'], [{ image: 42 }, 'image'],
    [{ image: '/nonexistent/dir/x.img' }, 'image'], [{ namespaces: [] }, 'namespaces'], [{ volatile_write_cache: 'yes' }, 'volatile_write_cache'],
  ] as const) {
    const fake = fakeDeviceContext({ config: config as Record<string, unknown> });
    t.throws(() => nvme.create(fake.ctx), { message: new RegExp(key) }, JSON.stringify(config));
  }
});
