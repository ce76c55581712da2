// Ring arithmetic, the phase tag across wrap-around, the completion entry's layout, and which doorbell
// values a queue accepts.

import test from 'ava';
import { CompletionQueue, ringDistance, SubmissionQueue } from './queues';

function cq(size: number): { q: CompletionQueue; bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(size * 16);
  return { q: new CompletionQueue(1, 0n, size, true, 0, bytes), bytes, view: new DataView(bytes.buffer) };
}

function sq(size: number): SubmissionQueue {
  const bytes = new Uint8Array(size * 64);
  for (let i = 0; i < size; i++) bytes[i * 64] = i; // opcode byte = slot number
  return new SubmissionQueue(1, 0n, size, 1, 0, bytes);
}

const post = (q: CompletionQueue, cid: number, status = 0) => q.post({ sqid: 3, sqhd: 7, cid, status, dw0: 0xdead_beef, dw1: 0x0102_0304 });

test('ringDistance is (b - a) mod n', (t) => {
  t.is(ringDistance(0, 0, 8), 0);
  t.is(ringDistance(2, 5, 8), 3);
  t.is(ringDistance(6, 1, 8), 3);
  t.is(ringDistance(5, 4, 8), 7);
});

test('a completion entry: DW0, DW1, SQHD | SQID << 16, CID | phase << 16 | status << 17', (t) => {
  const { q, view } = cq(4);
  post(q, 0xabcd, 0x4281);
  t.is(view.getUint32(0, true), 0xdead_beef);
  t.is(view.getUint32(4, true), 0x0102_0304);
  t.is(view.getUint16(8, true), 7, 'SQ head');
  t.is(view.getUint16(10, true), 3, 'SQ id');
  t.is(view.getUint16(12, true), 0xabcd, 'command id');
  t.is(view.getUint16(14, true), (0x4281 << 1) | 1, 'status field above the phase bit');
});

test('a new CQ posts with phase 1; the phase flips each time the tail wraps', (t) => {
  const { q, view } = cq(3);
  const phaseAt = (slot: number) => view.getUint16(slot * 16 + 14, true) & 1;
  post(q, 1);
  post(q, 2);
  t.deepEqual([phaseAt(0), phaseAt(1), q.tail, q.phase], [1, 1, 2, 1]);
  t.true(q.full, 'a 3-entry queue holds 2');
  q.head = 2;
  post(q, 3);
  t.deepEqual([phaseAt(2), q.tail, q.phase], [1, 0, 0], 'the wrap flips the phase of later entries');
  post(q, 4);
  t.is(phaseAt(0), 0, 'the second lap writes phase 0 over phase 1');
  t.is(view.getUint16(12, true), 4);
});

test('CQ fullness counts the entries the host has not released', (t) => {
  const { q } = cq(4);
  t.is(q.used, 0);
  post(q, 1);
  post(q, 2);
  post(q, 3);
  t.true(q.full);
  q.head = 1;
  t.false(q.full);
  t.is(q.used, 2);
});

test('a CQ head may move within the posted entries only', (t) => {
  const { q } = cq(8);
  post(q, 1);
  post(q, 2);
  post(q, 3);
  t.true(q.validHead(0), 'no change');
  t.true(q.validHead(2));
  t.true(q.validHead(3), 'everything consumed');
  t.false(q.validHead(4), 'past the tail');
  t.false(q.validHead(7), 'behind the head');
  t.false(q.validHead(8), 'outside the queue');
  t.false(q.validHead(0xffff));
});

test('SQ fetch copies the head entry, advances the head and wraps', (t) => {
  const q = sq(3);
  const e = new Uint8Array(64);
  q.tail = 2;
  q.fetch(e);
  t.is(e[0], 0);
  q.fetch(e);
  t.is(e[0], 1);
  t.true(q.empty);
  q.tail = 0;
  q.fetch(e);
  t.is(e[0], 2);
  t.is(q.head, 0, 'wrapped');
  t.true(q.empty);
});

test('an SQ tail may move forward over free slots, never back past unfetched entries', (t) => {
  const q = sq(8);
  q.head = 2;
  q.tail = 5;
  t.is(q.pending, 3);
  t.true(q.validTail(5), 'the same value');
  t.true(q.validTail(7));
  t.true(q.validTail(1), 'wrapping to one before the head: full');
  t.false(q.validTail(3), 'backwards: would drop entries');
  t.false(q.validTail(2), 'onto the head: an overfilled queue looks empty');
  t.false(q.validTail(8), 'outside the queue');
});
