// The controller's machinery: arbitration between SQs, completion queues that fill up, shadow
// doorbells with EventIdx (MMIO kicks and ioeventfd rings), interrupts (per pass, coalescing, INTMS /
// INTMC, IEN 0), doorbell validation, and a seeded fuzz run that must never fault the model.

import test from 'ava';
import { Rng } from '../../sdk/conformance';
import type { MemoryStore } from './backing-store';
import { TestHost } from './testing';

const FLUSH = 0x00;
const READ = 0x02;

function ready(config: Record<string, unknown> = {}): TestHost {
  const h = new TestHost(config);
  h.enable();
  return h;
}

/** Configure shadow doorbells; returns the two pages' word views. */
function shadow(h: TestHost): { db: Uint32Array; ei: Uint32Array } {
  const dbs = h.alloc(4096);
  const eis = h.alloc(4096);
  if (h.admin({ opcode: 0x7c, prp1: dbs, prp2: eis }).status !== 0) throw new Error('Doorbell Buffer Config failed');
  return { db: new Uint32Array(h.ram.buffer, Number(dbs), 1024), ei: new Uint32Array(h.ram.buffer, Number(eis), 1024) };
}

/** Queue n flushes on SQ qid and publish the tail in the shadow page only (no MMIO). */
function shadowSubmit(h: TestHost, db: Uint32Array, qid: number, n: number): void {
  for (let i = 0; i < n; i++) h.queue(qid, { opcode: FLUSH, nsid: 1 });
  db[2 * qid] = h.queues.get(qid)!.tail;
}

test('round robin: two SQs with work are served alternately, one command per turn (AB 0)', (t) => {
  const h = ready();
  h.createPair(1, 32);
  h.createPair(2, 32, { cqid: 1 });
  const { db } = shadow(h);
  shadowSubmit(h, db, 1, 6);
  shadowSubmit(h, db, 2, 6);
  h.dev.onEventfd('doorbell', 1n);
  const order = h.reap(1).map((c) => c.sqid);
  t.is(order.length, 12);
  for (let i = 1; i < order.length; i++) t.not(order[i], order[i - 1], order.join(','));
});

test('round robin with an arbitration burst of 4 (AB 2) takes four commands per turn', (t) => {
  const h = ready();
  t.is(h.admin({ opcode: 0x09, cdw10: 1, cdw11: 2 }).status, 0);
  h.createPair(1, 32);
  h.createPair(2, 32, { cqid: 1 });
  const { db } = shadow(h);
  shadowSubmit(h, db, 1, 8);
  shadowSubmit(h, db, 2, 8);
  h.dev.onEventfd('doorbell', 1n);
  const order = h.reap(1).map((c) => c.sqid).join('');
  t.true(order === '1111222211112222' || order === '2222111122221111', order);
});

test('weighted round robin: urgent first, then high:low in HPW+1 : LPW+1 turns', (t) => {
  const h = ready();
  h.write(0x14, 0);
  h.enable(16, 1 << 11);
  // HPW 2 (3 turns), MPW 0, LPW 0 (1 turn), AB 0.
  t.is(h.admin({ opcode: 0x09, cdw10: 1, cdw11: 2 << 24 }).status, 0);
  h.createPair(1, 32, { prio: 1 });
  h.createPair(2, 32, { cqid: 1, prio: 3 });
  h.createPair(3, 32, { cqid: 1, prio: 0 });
  const { db } = shadow(h);
  shadowSubmit(h, db, 1, 9);
  shadowSubmit(h, db, 2, 3);
  shadowSubmit(h, db, 3, 2);
  h.dev.onEventfd('doorbell', 1n);
  const order = h.reap(1).map((c) => c.sqid).join('');
  t.is(order, '33' + '1112'.repeat(3));
});

test('a full CQ holds back its SQ; freeing entries posts the rest in order, none overwritten', (t) => {
  const h = ready();
  h.createPair(1, 4);
  const q = h.queues.get(1)!;
  const cids: number[] = [];
  for (let i = 0; i < 3; i++) cids.push(h.queue(1, { opcode: FLUSH, nsid: 1 }));
  h.ringSq(1);
  const first = h.reap(1, false);
  t.deepEqual(first.map((c) => c.cid), cids);
  for (let i = 0; i < 3; i++) cids.push(h.queue(1, { opcode: FLUSH, nsid: 1 }));
  h.ringSq(1);
  t.deepEqual(h.reap(1, false), [], 'the CQ is full: nothing new (and nothing overwritten)');
  h.ringCq(1, q.head);
  const rest = h.reap(1);
  t.deepEqual(rest.map((c) => c.cid), cids.slice(3));
  t.deepEqual(rest.map((c) => c.sqhd), [0, 1, 2], 'SQ head as fetched: the SQ waited for room');
});

test('shadow doorbells: an I/O SQ\'s MMIO write is a kick (the shadow value counts); EventIdx follows the tail', (t) => {
  const h = ready();
  h.createPair(1, 16);
  const { db, ei } = shadow(h);
  shadowSubmit(h, db, 1, 3);
  h.ringSq(1, 9); // a stale or bogus MMIO value: the shadow page says 3
  t.is(h.reap(1).length, 3);
  t.is(ei[2], 3, 'EventIdx = the tail consumed');
  shadowSubmit(h, db, 1, 2);
  h.dev.onEventfd('doorbell', 1n);
  t.is(h.reap(1).length, 2, 'an ioeventfd ring reads the shadow tails');
  t.is(ei[2], 5);
  t.is(h.dev.stats.invalidDoorbells, 0);
});

test('shadow doorbells: a submission racing the pass is picked up without another doorbell', (t) => {
  const h = ready();
  h.createPair(1, 16);
  const { db } = shadow(h);
  const s = h.dev.namespaces[0].store as MemoryStore;
  const read = s.read.bind(s);
  let raced = false;
  s.read = (pos, bufs) => {
    if (!raced) {
      // The host submits more while the controller works, and sees no reason to ring (EventIdx not yet crossed).
      raced = true;
      shadowSubmit(h, db, 1, 2);
    }
    return read(pos, bufs);
  };
  h.queue(1, { opcode: READ, nsid: 1, prp1: h.alloc(4096), cdw12: 0 });
  db[2] = h.queues.get(1)!.tail;
  h.dev.onEventfd('doorbell', 1n);
  t.is(h.reap(1).length, 3);
});

test('shadow doorbells: a full CQ sets its EventIdx to the head; the host\'s ring frees it', (t) => {
  const h = ready();
  h.createPair(1, 4);
  const { db, ei } = shadow(h);
  shadowSubmit(h, db, 1, 3);
  h.dev.onEventfd('doorbell', 1n);
  t.is(h.reap(1, false).length, 3);
  shadowSubmit(h, db, 1, 2);
  h.dev.onEventfd('doorbell', 1n);
  t.is(ei[3], 0, 'CQ 1 EventIdx = its head: ring when you move past it');
  db[3] = h.queues.get(1)!.head;
  h.dev.onEventfd('doorbell', 1n);
  t.is(h.reap(1, false).length, 2);
});

test('the admin queue ignores shadows the host does not keep: its MMIO value counts and is mirrored', (t) => {
  const h = ready();
  const { db } = shadow(h);
  const c = h.admin({ opcode: 0x06, prp1: h.alloc(4096), cdw10: 1 });
  t.is(c.status, 0);
  t.is(db[0], h.queues.get(0)!.tail);
  t.is(db[1], h.queues.get(0)!.head);
});

test('an ioeventfd ring without a Doorbell Buffer is logged once and ignored', (t) => {
  const h = ready();
  h.createPair(1);
  h.queue(1, { opcode: FLUSH, nsid: 1 });
  h.dev.onEventfd('doorbell', 1n);
  h.dev.onEventfd('doorbell', 2n);
  h.dev.onEventfd('something-else', 1n);
  t.deepEqual(h.reap(1), []);
  t.is(h.fake.logs.filter((l) => l.includes('no Doorbell Buffer')).length, 1);
  t.is(h.dev.stats.eventfdRings, 3);
  t.is(h.csts(), 1);
});

test('interrupts: the first unannounced completion interrupts at once, a pass ending with more unconsumed adds one', (t) => {
  const h = ready();
  h.createPair(1, 16, { ien: true, vector: 1 });
  h.createPair(2, 16, { ien: false, vector: 2 });
  for (let i = 0; i < 3; i++) h.queue(1, { opcode: FLUSH, nsid: 1 });
  h.ringSq(1);
  t.is(h.irqs(1), 2, 'one at the first completion, one at the end for the two posted after it');
  t.is(h.reap(1).length, 3);
  h.cmd(1, { opcode: FLUSH, nsid: 1 });
  t.is(h.irqs(1), 3, 'the host emptied the CQ (head doorbell): the next completion interrupts at once, alone');
  h.cmd(2, { opcode: FLUSH, nsid: 1 });
  t.is(h.irqs(2), 0, 'IEN 0: none');
  t.true(h.irqs(0) >= 4, 'the admin CQ interrupts on vector 0');
});

test('interrupts with shadow doorbells: a CQ the host empties mid-pass re-arms the vector at once', (t) => {
  const h = ready();
  h.createPair(1, 16, { ien: true, vector: 1 });
  const { db } = shadow(h);
  const s = h.dev.namespaces[0].store as MemoryStore;
  const read = s.read.bind(s);
  let reads = 0;
  const seen: number[] = [];
  s.read = (pos, bufs) => {
    // While the controller reads for the second command, the host takes the first completion and
    // publishes its head in the shadow page (no MMIO, no ioeventfd ring).
    if (++reads === 2) {
      seen.push(...h.reap(1, false).map((c) => c.cid));
      db[3] = h.queues.get(1)!.head;
    }
    return read(pos, bufs);
  };
  for (let i = 0; i < 3; i++) h.queue(1, { opcode: READ, nsid: 1, prp1: h.alloc(4096), cdw12: 0 });
  db[2] = h.queues.get(1)!.tail;
  h.dev.onEventfd('doorbell', 1n);
  t.is(seen.length, 1);
  t.is(h.irqs(1), 3, 'entry 1 at once; entry 2 at once (the host had emptied the CQ); entry 3 at the end of the pass');
});

test('interrupt coalescing: with THR 1, an I/O vector is raised every 2 completions within a pass', (t) => {
  const h = ready();
  t.is(h.admin({ opcode: 0x09, cdw10: 8, cdw11: 1 }).status, 0);
  h.createPair(1, 16, { ien: true, vector: 1 });
  for (let i = 0; i < 5; i++) h.queue(1, { opcode: FLUSH, nsid: 1 });
  h.ringSq(1);
  t.is(h.irqs(1), 3, 'after 2, after 4, and the 5th at the end of the pass');
  h.reap(1);
  t.is(h.admin({ opcode: 0x09, cdw10: 9, cdw11: (1 << 16) | 1 }).status, 0, 'coalescing disabled for vector 1');
  for (let i = 0; i < 5; i++) h.queue(1, { opcode: FLUSH, nsid: 1 });
  h.ringSq(1);
  t.is(h.irqs(1), 5, 'the first at once, one more at the end of the pass');
});

test('INTMS holds a vector\'s interrupt back; INTMC raises it if completions waited', (t) => {
  const h = ready();
  h.createPair(1, 16, { ien: true, vector: 1 });
  h.write(0x0c, 1 << 1);
  h.cmd(1, { opcode: FLUSH, nsid: 1 });
  t.is(h.irqs(1), 0);
  h.write(0x10, 1 << 1);
  t.is(h.irqs(1), 1);
  h.write(0x10, 1 << 1);
  t.is(h.irqs(1), 1, 'nothing pending: no second interrupt');
});

test('a vector whose eventfd the task was not given loses its interrupts, counted', (t) => {
  const h = new TestHost({ vectors: 4 }, 4 << 20, ['irq0']);
  h.enable();
  h.createPair(1, 16, { ien: true, vector: 3 });
  h.cmd(1, { opcode: FLUSH, nsid: 1 });
  t.is(h.dev.stats.lostInterrupts, 1);
});

test('doorbells: nonexistent queues, values outside the queue or past the posted entries raise Error events', (t) => {
  const h = ready();
  h.createPair(1, 8);
  const events: number[] = [];
  const catchEvent = () => {
    h.queue(0, { opcode: 0x0c });
    h.ringSq(0);
  };
  const drain = () => {
    for (const c of h.reap(0)) if (c.status === 0 && (c.dw0 & 7) === 0) events.push((c.dw0 >> 8) & 0xff);
    // Read the Error log with RAE 0 so the next event can be reported.
    h.admin({ opcode: 0x02, prp1: h.alloc(4096), cdw10: 1 | (15 << 16) });
  };
  const cases: [string, () => void, number][] = [
    ['SQ 9 does not exist', () => h.ringSq(9, 1), 0],
    ['CQ 2 does not exist', () => h.ringCq(2, 1), 0],
    ['SQ 1 tail 8 of 8 entries', () => h.ringSq(1, 8), 1],
    ['CQ 1 head 3 with nothing posted', () => h.ringCq(1, 3), 1],
    ['SQ 1 tail moved backwards over unfetched entries', () => {
      h.write(0x0c, 0xffff_ffff);
      h.createPair(3, 4);
      for (let i = 0; i < 3; i++) h.queue(3, { opcode: FLUSH, nsid: 1 });
      h.ringSq(3, 3); // CQ 3 holds 3: all fetched and completed; no room for more
      h.queue(3, { opcode: FLUSH, nsid: 1 });
      h.ringSq(3, 0); // one more, unfetched: the CQ is full
      h.ringSq(3, 3); // backwards past the unfetched entry
    }, 1],
  ];
  for (const [what, ring, info] of cases) {
    events.length = 0;
    catchEvent();
    ring();
    drain();
    t.deepEqual(events, [info], what);
  }
  t.is(h.dev.stats.invalidDoorbells, 5);
  t.is(h.csts(), 1, 'still running');
});

test('doorbells of the wrong width or alignment are ignored; an 8-byte write rings two', (t) => {
  const h = ready();
  h.createPair(1, 8);
  h.queue(1, { opcode: FLUSH, nsid: 1 });
  h.write(0x1008, 1, 2);
  h.write(0x100a, 1, 4);
  t.deepEqual(h.reap(1, false), []);
  h.write(0x1008, (0n << 32n) | 1n, 8); // SQ 1 tail 1, CQ 1 head 0
  t.is(h.reap(1, false).length, 1);
});

test('doorbells before CC.EN are ignored, never processed', (t) => {
  const h = new TestHost();
  h.write(0x1000, 1);
  t.is(h.csts(), 0);
  t.is(h.dev.stats.doorbellWrites, 1);
});

test('reset() returns to power-on: not ready, registers at reset values, counters cleared', (t) => {
  const h = ready();
  h.createPair(1);
  h.cmd(1, { opcode: FLUSH, nsid: 1 });
  h.dev.reset();
  t.is(h.csts(), 0);
  t.is(h.read(0x24), 0n);
  t.is(h.dev.stats.commands, 0);
  t.is(h.dev.errorLog.length, 0);
});

test('fuzz: 20k random submissions and register writes never fault the model (seeded)', (t) => {
  const rng = new Rng(8);
  const h = new TestHost({ queues: 4, queue_entries: 16, mdts: 3 }, 1 << 20, 'any');
  const sqe = new Uint8Array(64);
  const opcodes = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x7c, 0x08, 0x09, 0xff];
  for (let round = 0; round < 200; round++) {
    h.enable(16);
    for (let i = 0; i < 100; i++) {
      const kind = rng.below(10);
      if (kind < 7) {
        // A random command on the admin queue or an I/O queue that may exist.
        const qid = rng.below(4);
        const q = h.queues.get(qid) ?? h.queues.get(0)!;
        for (let b = 0; b < 64; b += 4) new DataView(sqe.buffer).setUint32(b, rng.u32(), true);
        sqe[0] = opcodes[rng.below(opcodes.length)];
        sqe[1] = rng.below(4) === 0 ? rng.below(256) : 0;
        new DataView(sqe.buffer).setUint32(4, rng.below(3), true);
        // Mostly addresses inside the 1 MiB of RAM, sometimes anywhere.
        if (rng.below(3)) new DataView(sqe.buffer).setBigUint64(24, BigInt(rng.below(1 << 20) & ~3), true);
        if (rng.below(3)) new DataView(sqe.buffer).setBigUint64(32, BigInt(rng.below(1 << 20) & ~7), true);
        h.ram.set(sqe, Number(q.sq) + q.tail * 64);
        q.tail = (q.tail + 1) % q.entries;
        h.ringSq(h.queues.has(qid) ? qid : 0, q.tail);
        h.reap(0);
      } else if (kind < 9) {
        h.write(0x1000 + 4 * rng.below(16), rng.below(20));
      } else {
        h.dev.onEventfd('doorbell', 1n);
      }
    }
    h.write(0x14, 0);
  }
  t.deepEqual(h.fake.logs.filter((l) => l.includes('internal error')), []);
  t.true(h.dev.stats.commands > 10000, `${h.dev.stats.commands} commands executed`);
});
