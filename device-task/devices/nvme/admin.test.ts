// Admin commands through the admin queue of an in-memory controller: Identify contents, queue creation
// and deletion with each error status, features, log pages, async events, Abort, Doorbell Buffer
// Config, and the generic errors (unknown opcode, fused/SGL, command id conflict).

import test from 'ava';
import { DNR, SC } from './defs';
import { TestHost } from './testing';

const CREATE_CQ = 0x05;
const CREATE_SQ = 0x01;
const DELETE_SQ = 0x00;
const DELETE_CQ = 0x04;
const IDENTIFY = 0x06;
const GET_FEATURES = 0x0a;
const SET_FEATURES = 0x09;
const GET_LOG_PAGE = 0x02;
const AER = 0x0c;
const DBBUF = 0x7c;

function ready(config: Record<string, unknown> = {}): TestHost {
  const h = new TestHost(config);
  h.enable();
  return h;
}

function identify(h: TestHost, cns: number, nsid = 0): { status: number; data: DataView } {
  const buf = h.alloc(4096);
  const { status } = h.admin({ opcode: IDENTIFY, nsid, prp1: buf, cdw10: cns });
  return { status, data: new DataView(h.ram.buffer, Number(buf), 4096) };
}

const ascii = (v: DataView, off: number, len: number) => Buffer.from(v.buffer, v.byteOffset + off, len).toString('latin1');

test('Identify Controller: strings, MDTS, VER, OACS, limits, entry sizes, NN, ONCS, VWC', (t) => {
  const h = ready({ serial: 'SN-42', namespaces: [{ ram_size: 1 << 20 }, { ram_size: 1 << 19, lba_size: 4096 }] });
  const { status, data } = identify(h, 1);
  t.is(status, 0);
  t.is(ascii(data, 4, 20), 'SN-42'.padEnd(20));
  t.is(ascii(data, 0x18, 40), 'ioregionfd-emu NVMe'.padEnd(40));
  t.is(ascii(data, 0x40, 8), '0.1.0   ');
  t.is(data.getUint8(0x4d), 7, 'MDTS');
  t.is(data.getUint32(0x50, true), 0x10400, 'VER');
  t.is(data.getUint8(0x6f), 1, 'CNTRLTYPE');
  t.is(data.getUint16(0x100, true), 0x100, 'OACS: Doorbell Buffer Config');
  t.is(data.getUint8(0x102), 3, 'ACL');
  t.is(data.getUint8(0x103), 3, 'AERL');
  t.is(data.getUint8(0x106), 15, 'ELPE');
  t.is(data.getUint8(0x200), 0x66);
  t.is(data.getUint8(0x201), 0x44);
  t.is(data.getUint32(0x204, true), 2, 'NN');
  t.is(data.getUint16(0x208, true), 0x1c, 'ONCS: DSM, Write Zeroes, Save/Select');
  t.is(data.getUint8(0x20d), 7, 'VWC present, broadcast flush');
  t.regex(ascii(data, 0x300, 64), /^nqn\.[^\0]*:SN-42\0/);
  const noCache = identify(ready({ volatile_write_cache: false, shadow_doorbells: false }), 1).data;
  t.is(noCache.getUint8(0x20d), 6);
  t.is(noCache.getUint16(0x100, true), 0);
});

test('Identify Namespace: size, format, identifiers; NSID 0, past NN and broadcast are Invalid Namespace', (t) => {
  const h = ready({ namespaces: [{ ram_size: 1 << 20 }, { ram_size: 1 << 19, lba_size: 4096 }] });
  const ns1 = identify(h, 0, 1).data;
  t.is(ns1.getBigUint64(0, true), 2048n, 'NSZE');
  t.is(ns1.getBigUint64(8, true), 2048n, 'NCAP');
  t.is(ns1.getUint8(0x1a), 0, 'FLBAS');
  t.is(ns1.getUint8(0x80 + 2), 9, 'LBADS 512');
  const ns2 = identify(h, 0, 2).data;
  t.is(ns2.getBigUint64(0, true), 128n);
  t.is(ns2.getUint8(0x80 + 2), 12, 'LBADS 4096');
  t.notDeepEqual(Buffer.from(ns1.buffer, ns1.byteOffset + 0x68, 16), Buffer.from(ns2.buffer, ns2.byteOffset + 0x68, 16), 'distinct NGUIDs');
  for (const nsid of [0, 3, 0xffff_ffff]) t.is(identify(h, 0, nsid).status, SC.INVALID_NAMESPACE | DNR, `nsid ${nsid}`);
});

test('Identify Active Namespace list: NSIDs above CDW1.NSID, ascending; FFFFFFFEh and up invalid', (t) => {
  const h = ready({ namespaces: [{}, {}, {}] });
  const all = identify(h, 2, 0).data;
  t.deepEqual([all.getUint32(0, true), all.getUint32(4, true), all.getUint32(8, true), all.getUint32(12, true)], [1, 2, 3, 0]);
  const above = identify(h, 2, 2).data;
  t.deepEqual([above.getUint32(0, true), above.getUint32(4, true)], [3, 0]);
  t.is(identify(h, 2, 0xffff_fffe).status, SC.INVALID_NAMESPACE | DNR);
});

test('Identify NS descriptors: EUI-64, NGUID, UUID matching Identify Namespace', (t) => {
  const h = ready();
  const d = identify(h, 3, 1).data;
  const ns = identify(h, 0, 1).data;
  t.deepEqual([d.getUint8(0), d.getUint8(1)], [1, 8]);
  t.deepEqual(Buffer.from(d.buffer, d.byteOffset + 4, 8), Buffer.from(ns.buffer, ns.byteOffset + 0x78, 8));
  t.deepEqual([d.getUint8(12), d.getUint8(13)], [2, 16]);
  t.deepEqual(Buffer.from(d.buffer, d.byteOffset + 16, 16), Buffer.from(ns.buffer, ns.byteOffset + 0x68, 16));
  t.deepEqual([d.getUint8(32), d.getUint8(33)], [3, 16]);
  t.is(d.getUint8(36 + 6) >> 4, 4, 'UUID version 4');
  t.is(d.getUint8(52), 0, 'the list ends');
  t.is(identify(h, 3, 9).status, SC.INVALID_NAMESPACE | DNR);
});

test('Identify with an unsupported CNS is Invalid Field', (t) => {
  const h = ready();
  for (const cns of [4, 5, 6, 0x10, 0xff]) t.is(identify(h, cns, 1).status, SC.INVALID_FIELD | DNR, `CNS ${cns}`);
});

test('Create I/O CQ: every invalid field and queue status', (t) => {
  const h = ready({ queues: 4, queue_entries: 64 });
  const mem = h.alloc(64 * 16);
  const cq = (cdw10: number, cdw11: number, prp1 = mem) => h.admin({ opcode: CREATE_CQ, prp1, cdw10, cdw11 }).status;
  t.is(cq((15 << 16) | 0, 1), SC.INVALID_QID | DNR, 'QID 0');
  t.is(cq((15 << 16) | 5, 1), SC.INVALID_QID | DNR, 'QID past the queues offered');
  t.is(cq((0 << 16) | 1, 1), SC.INVALID_QSIZE | DNR, 'one entry');
  t.is(cq((64 << 16) | 1, 1), SC.INVALID_QSIZE | DNR, 'more than MQES + 1');
  t.is(cq((15 << 16) | 1, 0), SC.INVALID_FIELD | DNR, 'not physically contiguous');
  t.is(cq((15 << 16) | 1, (4 << 16) | 3), SC.INVALID_VECTOR | DNR, 'vector 4 of irq0..irq3');
  t.is(cq((15 << 16) | 1, 1, mem + 8n), SC.INVALID_PRP_OFFSET | DNR, 'base not page aligned');
  t.is(cq((15 << 16) | 1, 1, 0x10_0000_0000n), SC.DATA_TRANSFER_ERROR | DNR, 'outside guest RAM');
  t.is(cq((63 << 16) | 1, (4 << 16) | 1), SC.INVALID_VECTOR | DNR, 'IEN 0: the vector must exist all the same');
  t.is(cq((63 << 16) | 1, (3 << 16) | 1), 0, 'IEN 0 with a vector that exists');
  t.is(cq((15 << 16) | 1, 1), SC.INVALID_QID | DNR, 'already exists');
  t.is(cq((15 << 16) | 4, (3 << 16) | 3), 0, 'the last QID, the last vector');
});

test('Create I/O CQ/SQ before CC.IOSQES/IOCQES are set is Invalid Field', (t) => {
  const h = new TestHost();
  h.write(0x24, (15 << 16) | 15);
  h.write(0x28, 0x10000n, 8);
  h.write(0x30, 0x20000n, 8);
  h.queues.set(0, { sq: 0x10000n, cq: 0x20000n, entries: 16, tail: 0, head: 0, phase: 1 });
  h.write(0x14, 1);
  t.is(h.csts(), 1);
  t.is(h.admin({ opcode: CREATE_CQ, prp1: h.alloc(256), cdw10: (15 << 16) | 1, cdw11: 1 }).status, SC.INVALID_FIELD | DNR);
});

test('Create I/O SQ: every invalid field and queue status', (t) => {
  const h = ready({ queues: 4, queue_entries: 64 });
  t.is(h.admin({ opcode: CREATE_CQ, prp1: h.alloc(4096), cdw10: (15 << 16) | 1, cdw11: 1 }).status, 0);
  const mem = h.alloc(64 * 64);
  const sq = (cdw10: number, cdw11: number, prp1 = mem) => h.admin({ opcode: CREATE_SQ, prp1, cdw10, cdw11 }).status;
  t.is(sq((15 << 16) | 1, (0 << 16) | 1), SC.CQ_INVALID | DNR, 'CQID 0 (the admin CQ)');
  t.is(sq((15 << 16) | 1, (2 << 16) | 1), SC.CQ_INVALID | DNR, 'a CQ that does not exist');
  t.is(sq((15 << 16) | 0, (1 << 16) | 1), SC.INVALID_QID | DNR, 'QID 0');
  t.is(sq((15 << 16) | 5, (1 << 16) | 1), SC.INVALID_QID | DNR, 'QID past the queues offered');
  t.is(sq((0 << 16) | 1, (1 << 16) | 1), SC.INVALID_QSIZE | DNR);
  t.is(sq((64 << 16) | 1, (1 << 16) | 1), SC.INVALID_QSIZE | DNR);
  t.is(sq((15 << 16) | 1, 1 << 16), SC.INVALID_FIELD | DNR, 'not physically contiguous');
  t.is(sq((15 << 16) | 1, (1 << 16) | 1, mem + 64n), SC.INVALID_PRP_OFFSET | DNR);
  t.is(sq((15 << 16) | 1, (1 << 16) | 1, BigInt(4 << 20)), SC.DATA_TRANSFER_ERROR | DNR, 'outside guest RAM');
  t.is(sq((15 << 16) | 1, (1 << 16) | (3 << 1) | 1), 0, 'low priority');
  t.is(sq((15 << 16) | 1, (1 << 16) | 1), SC.INVALID_QID | DNR, 'already exists');
  t.is(sq((15 << 16) | 2, (1 << 16) | 1), 0, 'a second SQ on the same CQ');
});

test('Delete I/O SQ/CQ: invalid ids, a CQ with SQs attached, and the order that works', (t) => {
  const h = ready();
  t.deepEqual(h.createPair(1), [0, 0]);
  const del = (opcode: number, qid: number) => h.admin({ opcode, cdw10: qid }).status;
  t.is(del(DELETE_SQ, 0), SC.INVALID_QID | DNR, 'the admin SQ');
  t.is(del(DELETE_CQ, 0), SC.INVALID_QID | DNR, 'the admin CQ');
  t.is(del(DELETE_SQ, 2), SC.INVALID_QID | DNR, 'nonexistent SQ');
  t.is(del(DELETE_CQ, 2), SC.INVALID_QID | DNR, 'nonexistent CQ');
  t.is(del(DELETE_CQ, 1), SC.INVALID_QUEUE_DELETION, 'an SQ still uses it (no DNR: it succeeds once the SQ is gone)');
  t.is(del(DELETE_SQ, 1), 0);
  t.is(del(DELETE_SQ, 1), SC.INVALID_QID | DNR, 'twice');
  t.is(del(DELETE_CQ, 1), 0);
  t.deepEqual(h.createPair(1), [0, 0], 'the ids are free again');
});

test('Number of Queues: grants min(request, offered), 0xFFFF is invalid, Command Sequence Error once queues exist', (t) => {
  const h = ready({ queues: 8 });
  const set = (cdw11: number) => h.admin({ opcode: SET_FEATURES, cdw10: 7, cdw11 });
  const got = h.admin({ opcode: GET_FEATURES, cdw10: 7 });
  t.is(got.dw0, 7 | (7 << 16), 'by default everything offered');
  const r = set(3 | (100 << 16));
  t.is(r.status, 0);
  t.is(r.dw0, 3 | (7 << 16), '4 SQs as asked, 8 CQs offered');
  t.is(h.admin({ opcode: GET_FEATURES, cdw10: 7 }).dw0, 3 | (7 << 16));
  t.is(set(0xffff).status, SC.INVALID_FIELD | DNR);
  t.is(set(0xffff << 16).status, SC.INVALID_FIELD | DNR);
  t.deepEqual(h.createPair(4), [0, 0], 'SQ 4 is within the 4 granted');
  t.deepEqual(h.createPair(5), [0, SC.INVALID_QID | DNR], 'SQ 5 is not');
  t.is(set(1 | (1 << 16)).status, SC.COMMAND_SEQUENCE_ERROR | DNR);
});

test('features keep their values; SEL default/saved/supported; SV is Feature Not Saveable', (t) => {
  const h = ready({ vectors: 4 });
  const get = (fid: number, sel = 0, cdw11 = 0) => h.admin({ opcode: GET_FEATURES, cdw10: fid | (sel << 8), cdw11 });
  const set = (fid: number, cdw11: number, save = false) => h.admin({ opcode: SET_FEATURES, cdw10: fid | (save ? 1 << 31 : 0), cdw11 }).status;
  t.is(set(1, 0x0403_0201), 0);
  t.is(get(1).dw0, 0x0403_0201, 'Arbitration');
  t.is(get(1, 1).dw0, 0, 'its default');
  t.is(get(1, 2).dw0, 0, 'saved = default: nothing is saved');
  t.is(get(1, 3).dw0, 4, 'changeable, not saveable, not per namespace');
  t.is(get(1, 4).status, SC.INVALID_FIELD | DNR, 'SEL 4');
  t.is(set(1, 0, true), SC.FEATURE_NOT_SAVEABLE | DNR);
  t.is(set(6, 0), 0);
  t.is(get(6).dw0, 0, 'Volatile Write Cache off');
  t.is(get(6, 1).dw0, 1, 'on by default');
  t.is(set(8, 0x0a07), 0);
  t.is(get(8).dw0, 0x0a07, 'Interrupt Coalescing');
  t.is(set(9, (1 << 16) | 2), 0);
  t.is(get(9, 0, 2).dw0, (1 << 16) | 2, 'Interrupt Vector Configuration: CD on vector 2');
  t.is(get(9, 0, 1).dw0, 1);
  t.is(set(9, 4), SC.INVALID_FIELD | DNR, 'vector 4 of 4');
  t.is(set(2, 1), SC.INVALID_FIELD | DNR, 'power state 1 of one');
  t.is(set(2, 0x40), 0);
  t.is(set(4, 0x150), 0);
  t.is(get(4).dw0, 0x150, 'over-temperature threshold');
  t.is(get(4, 0, 1 << 20).dw0, 1 << 20, 'under-temperature threshold 0');
  t.is(set(4, 1 << 16), SC.INVALID_FIELD | DNR, 'a sensor that does not exist');
  t.is(set(5, 1 << 16), SC.INVALID_FIELD | DNR, 'DULBE not supported');
  t.is(set(0x0b, 0x1ff), 0);
  t.is(get(0x0b).dw0, 0xff, 'only the SMART warnings are kept');
  for (const fid of [0, 3, 0x0c, 0x0e, 0x7f, 0x80, 0xff]) t.is(get(fid).status, SC.INVALID_FIELD | DNR, `FID ${fid}`);
  const noCache = ready({ volatile_write_cache: false });
  t.is(noCache.admin({ opcode: GET_FEATURES, cdw10: 6 }).status, SC.INVALID_FIELD | DNR, 'no cache, no feature 6');
});

function logPage(h: TestHost, lid: number, dwords: number, opts: { offset?: number; nsid?: number; rae?: boolean } = {}) {
  const buf = h.alloc(Math.max(4096, dwords * 4));
  h.ram.fill(0xee, Number(buf), Number(buf) + dwords * 4);
  const numd = dwords - 1;
  const { status } = h.admin({
    opcode: GET_LOG_PAGE, nsid: opts.nsid ?? 0xffff_ffff, prp1: buf, prp2: buf + 4096n,
    cdw10: lid | (opts.rae ? 1 << 15 : 0) | ((numd & 0xffff) << 16), cdw11: numd >>> 16, cdw12: opts.offset ?? 0,
  });
  return { status, data: new DataView(h.ram.buffer, Number(buf), dwords * 4) };
}

test('Error Information log: newest first, with SQID, CID, status and LBA of failed commands', (t) => {
  const h = ready();
  t.is(logPage(h, 1, 16).data.getBigUint64(0, true), 0n, 'empty at first');
  const bad = h.admin({ opcode: 0x7b, cid: 0x77 });
  t.is(bad.status, SC.INVALID_OPCODE | DNR);
  h.createPair(1);
  const io = h.cmd(1, { opcode: 2, nsid: 1, prp1: h.alloc(4096), cdw10: 5000, cdw12: 0, cid: 0x88 });
  t.is(io.status, SC.LBA_OUT_OF_RANGE | DNR);
  const { status, data } = logPage(h, 1, 16 * 16);
  t.is(status, 0);
  t.is(data.getBigUint64(0, true), 2n, 'error count of the newest entry');
  t.is(data.getUint16(8, true), 1, 'SQID');
  t.is(data.getUint16(10, true), 0x88, 'CID');
  t.is(data.getUint16(12, true) >> 1, SC.LBA_OUT_OF_RANGE | DNR, 'status');
  t.is(data.getBigUint64(16, true), 5000n, 'LBA');
  t.is(data.getUint32(24, true), 1, 'NSID');
  t.is(data.getBigUint64(64, true), 1n);
  t.is(data.getUint16(64 + 10, true), 0x77);
  t.is(data.getBigUint64(128, true), 0n, 'then unused entries');
});

test('SMART / Health log: temperature, spare, data units, commands; NSID must be 0 or broadcast', (t) => {
  const h = ready();
  h.createPair(1);
  const buf = h.alloc(4096 * 4);
  t.is(h.cmd(1, { opcode: 1, nsid: 1, prp1: buf, prp2: h.alloc(4096), cdw12: 1999 & 0 | 7 }).status, 0);
  for (let i = 0; i < 3; i++) t.is(h.cmd(1, { opcode: 2, nsid: 1, prp1: buf, cdw12: 0 }).status, 0);
  const { status, data } = logPage(h, 2, 128);
  t.is(status, 0);
  t.is(data.getUint16(1, true), 295, 'composite temperature (K)');
  t.is(data.getUint8(3), 100, 'available spare');
  t.is(data.getBigUint64(32, true), 1n, 'data units read: 1536 bytes round up to 1');
  t.is(data.getBigUint64(48, true), 1n);
  t.is(data.getBigUint64(64, true), 3n, 'host read commands');
  t.is(data.getBigUint64(80, true), 1n, 'host write commands');
  t.is(data.getBigUint64(112, true), 1n, 'power cycles');
  t.is(logPage(h, 2, 128, { nsid: 0 }).status, 0);
  t.is(logPage(h, 2, 128, { nsid: 1 }).status, SC.INVALID_FIELD | DNR, 'no per-namespace SMART');
});

test('Firmware Slot log, offsets, sizes past the log, and unknown log pages', (t) => {
  const h = ready();
  const fw = logPage(h, 3, 128).data;
  t.is(fw.getUint8(0), 1, 'slot 1 active');
  t.is(ascii(fw, 8, 8), '0.1.0   ');
  const part = logPage(h, 3, 4, { offset: 8 });
  t.is(ascii(part.data, 0, 8), '0.1.0   ', 'LPOL offset 8');
  const long = logPage(h, 3, 256);
  t.is(long.status, 0);
  t.is(long.data.getUint32(1020, true), 0, 'past the 512-byte log: zeros');
  t.is(logPage(h, 3, 4, { offset: 2 }).status, SC.INVALID_FIELD | DNR, 'offset not dword aligned');
  t.is(logPage(h, 3, 4, { offset: 1024 }).status, SC.INVALID_FIELD | DNR, 'offset past the log');
  t.is(logPage(h, 3, 4, { offset: 512 }).status, SC.INVALID_FIELD | DNR, 'offset at the log\'s end: no byte of the log is there');
  t.is(logPage(h, 3, 4, { offset: 508 }).status, 0, 'the last dword of the log');
  for (const lid of [0, 4, 5, 0x80, 0xff]) t.is(logPage(h, lid, 4).status, SC.INVALID_LOG_PAGE | DNR, `LID ${lid}`);
});

test('AER is held until an event; an invalid doorbell completes it with type Error and log page 1', (t) => {
  const h = ready();
  const cid = h.queue(0, { opcode: AER });
  h.ringSq(0);
  t.deepEqual(h.reap(0), [], 'held');
  const irqs = h.irqs(0);
  h.write(0x1000 + 8 * 5, 1); // SQ 5 does not exist
  t.is(h.irqs(0), irqs + 1, 'the AER\'s completion interrupts on vector 0');
  const [c] = h.reap(0);
  t.is(c.cid, cid);
  t.is(c.status, 0);
  t.is(c.dw0, 0 | (0x00 << 8) | (1 << 16), 'Error / invalid doorbell register / Error Information log');
});

test('after an Error event, more are masked until the Error log is read with RAE 0', (t) => {
  const h = ready();
  h.queue(0, { opcode: AER });
  h.queue(0, { opcode: AER });
  h.ringSq(0);
  h.write(0x1000 + 8 * 5, 1);
  t.is(h.reap(0).length, 1);
  h.write(0x1004, 9); // admin CQ head past the posted entries: invalid value
  t.deepEqual(h.reap(0), [], 'masked: the second AER is still held');
  t.is(logPage(h, 1, 16, { rae: true }).status, 0);
  t.deepEqual(h.reap(0), [], 'RAE 1 keeps the mask');
  const cid = h.queue(0, { opcode: GET_LOG_PAGE, prp1: h.alloc(4096), cdw10: 1 | (15 << 16) });
  h.ringSq(0);
  const got = h.reap(0);
  t.is(got.length, 2, 'the log read, then the held AER with the queued event');
  t.is(got[0].cid, cid);
  t.is(got[1].dw0 & 0xffff, 0 | (0x01 << 8), 'invalid doorbell write value');
});

test('more AERs than AERL + 1 is AER Limit Exceeded; a controller reset drops held AERs', (t) => {
  const h = ready();
  for (let i = 0; i < 4; i++) h.queue(0, { opcode: AER });
  h.ringSq(0);
  t.deepEqual(h.reap(0), []);
  const over = h.admin({ opcode: AER });
  t.is(over.status, SC.AER_LIMIT_EXCEEDED, 'no DNR: it succeeds once an AER has completed');
  h.write(0x14, 0);
  h.enable();
  h.write(0x1000 + 8 * 5, 1);
  t.deepEqual(h.reap(0), [], 'no AER survived the reset');
});

test('a command id already outstanding on the SQ is Command ID Conflict', (t) => {
  const h = ready();
  h.queue(0, { opcode: AER, cid: 0x42 });
  h.ringSq(0);
  const c = h.admin({ opcode: IDENTIFY, cid: 0x42, prp1: h.alloc(4096), cdw10: 1 });
  t.is(c.status, SC.CID_CONFLICT | DNR);
  t.is(h.admin({ opcode: IDENTIFY, cid: 0x43, prp1: h.alloc(4096), cdw10: 1 }).status, 0);
});

test('Abort answers "not aborted" (DW0 bit 0): commands run to completion when fetched', (t) => {
  const h = ready();
  const c = h.admin({ opcode: 0x08, cdw10: (0x1234 << 16) | 1 });
  t.is(c.status, 0);
  t.is(c.dw0 & 1, 1);
});

test('unknown opcodes, fused commands and SGLs on the admin queue', (t) => {
  const h = ready();
  for (const opcode of [0x03, 0x07, 0x10, 0x11, 0x80, 0x81, 0xc0, 0xff]) t.is(h.admin({ opcode }).status, SC.INVALID_OPCODE | DNR, `opcode ${opcode}`);
  t.is(h.admin({ opcode: IDENTIFY, flags: 1, prp1: h.alloc(4096), cdw10: 1 }).status, SC.INVALID_FIELD | DNR, 'FUSE');
  t.is(h.admin({ opcode: IDENTIFY, flags: 0x40, prp1: h.alloc(4096), cdw10: 1 }).status, SC.INVALID_FIELD | DNR, 'PSDT SGL');
  t.is(ready({ shadow_doorbells: false }).admin({ opcode: DBBUF, prp1: 0x80000n, prp2: 0x81000n }).status, SC.INVALID_OPCODE | DNR,
    'Doorbell Buffer Config when not advertised');
});

test('Identify into a buffer outside guest RAM is a Data Transfer Error; a bad PRP2 offset is Invalid PRP Offset', (t) => {
  const h = ready();
  t.is(h.admin({ opcode: IDENTIFY, prp1: 0x7fff_0000n, cdw10: 1 }).status, SC.DATA_TRANSFER_ERROR | DNR);
  t.is(h.admin({ opcode: IDENTIFY, prp1: h.alloc(8192) + 0x800n, prp2: h.alloc(4096) + 8n, cdw10: 1 }).status, SC.INVALID_PRP_OFFSET | DNR);
  const buf = h.alloc(8192);
  t.is(h.admin({ opcode: IDENTIFY, prp1: buf + 0x800n, prp2: buf + 0x1000n, cdw10: 1 }).status, 0, 'split over two pages');
  t.is(Buffer.from(h.ram.subarray(Number(buf) + 0x800 + 0x18, Number(buf) + 0x800 + 0x18 + 14)).toString(), 'ioregionfd-emu');
});

test('Doorbell Buffer Config: page-aligned, non-zero, in RAM; fills the shadow and EventIdx slots', (t) => {
  const h = ready();
  const dbs = h.alloc(4096);
  const eis = h.alloc(4096);
  t.is(h.admin({ opcode: DBBUF, prp1: dbs + 4n, prp2: eis }).status, SC.INVALID_FIELD | DNR);
  t.is(h.admin({ opcode: DBBUF, prp1: 0n, prp2: eis }).status, SC.INVALID_FIELD | DNR);
  t.is(h.admin({ opcode: DBBUF, prp1: dbs, prp2: 0x7fff_0000n }).status, SC.DATA_TRANSFER_ERROR | DNR);
  h.createPair(1);
  t.is(h.admin({ opcode: DBBUF, prp1: dbs, prp2: eis }).status, 0);
  const tail0 = h.queues.get(0)!.tail;
  t.is(h.view.getUint32(Number(dbs), true), tail0, 'admin SQ tail in its shadow slot');
  t.is(h.view.getUint32(Number(eis), true), tail0, 'and as its EventIdx');
  t.is(h.view.getUint32(Number(dbs) + 8, true), 0, 'SQ 1 tail');
  t.is(h.view.getUint32(Number(eis) + 12, true), 0, 'CQ 1 EventIdx');
});
