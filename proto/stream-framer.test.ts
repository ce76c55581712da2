// Checks that StreamFramer rebuilds every 32-byte frame, in order, from a stream split and coalesced at arbitrary points.

import test from 'ava';
import { StreamFramer } from './stream-framer';

const FRAME = 32;

/** xorshift32: a deterministic generator so a failing fragmentation can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Frame i: its index as a u32 at byte 0, then pseudo-random bytes, so every frame is distinguishable. */
function makeStream(frames: number, next: () => number): Uint8Array {
  const stream = new Uint8Array(frames * FRAME);
  const view = new DataView(stream.buffer);
  for (let i = 0; i < frames; i++) {
    view.setUint32(i * FRAME, i, true);
    for (let j = 4; j < FRAME; j++) stream[i * FRAME + j] = next() & 0xff;
  }
  return stream;
}

/** A copy of `bytes` placed at a random non-zero byteOffset inside a larger, garbage-filled ArrayBuffer. */
function inForeignBuffer(bytes: Uint8Array, next: () => number): Uint8Array {
  const lead = 1 + (next() % 13);
  const backing = new Uint8Array(lead + bytes.byteLength + (next() % 7)).fill(0xcc);
  backing.set(bytes, lead);
  return backing.subarray(lead, lead + bytes.byteLength);
}

test('10k frames pushed in pseudo-random chunks of 1..200 bytes come out whole and in order', (t) => {
  const FRAMES = 10_000;
  const next = rng(0x1badb002);
  const stream = makeStream(FRAMES, next);
  const got: Uint8Array[] = [];
  const framer = new StreamFramer((view, off) => {
    got.push(new Uint8Array(view.buffer, view.byteOffset + off, FRAME).slice());
  });

  let pushed = 0;
  let chunks = 0;
  let coalesced = 0;
  let splits = 0;
  let pendingWrong = 0;
  while (pushed < stream.length) {
    const size = Math.min(1 + (next() % 200), stream.length - pushed);
    const chunk = inForeignBuffer(stream.subarray(pushed, pushed + size), next);
    framer.push(chunk);
    pushed += size;
    chunks++;
    if (size >= 2 * FRAME) coalesced++;
    if (pushed % FRAME !== 0) splits++;
    if (framer.pending !== pushed % FRAME) pendingWrong++;
  }

  t.true(coalesced > 100, 'the fragmentation really coalesced frames');
  t.true(splits > chunks / 2, 'most chunks ended in the middle of a frame');
  t.is(pendingWrong, 0, 'pending equals the bytes of the incomplete frame after every push');
  t.is(framer.pending, 0);
  t.is(got.length, FRAMES);
  let mismatched = -1;
  for (let i = 0; i < FRAMES && mismatched < 0; i++) {
    const want = stream.subarray(i * FRAME, (i + 1) * FRAME);
    if (got[i].some((b, j) => b !== want[j])) mismatched = i;
  }
  t.is(mismatched, -1, 'first frame that differs from what was sent');
});

test('whole frames inside a chunk are delivered zero-copy over the chunk buffer; a split frame is copied', (t) => {
  const next = rng(7);
  const stream = makeStream(4, next);
  const chunk = inForeignBuffer(stream.subarray(0, 3 * FRAME + 10), next);
  t.not(chunk.byteOffset, 0, 'the chunk starts inside its buffer');
  const seen: Array<{ sameBuffer: boolean; index: number }> = [];
  const framer = new StreamFramer((view, off) => {
    seen.push({ sameBuffer: view.buffer === chunk.buffer, index: view.getUint32(off, true) });
  });
  framer.push(chunk);
  t.is(framer.pending, 10);
  framer.push(stream.subarray(3 * FRAME + 10));
  t.is(framer.pending, 0);
  t.deepEqual(seen, [
    { sameBuffer: true, index: 0 },
    { sameBuffer: true, index: 1 },
    { sameBuffer: true, index: 2 },
    { sameBuffer: false, index: 3 },
  ]);
});

test('a frame dribbled in one byte at a time is delivered once, after its last byte', (t) => {
  const stream = makeStream(1, rng(3));
  const got: number[][] = [];
  const framer = new StreamFramer((view, off) => {
    got.push(Array.from(new Uint8Array(view.buffer, view.byteOffset + off, FRAME)));
  });
  for (let i = 0; i < FRAME; i++) {
    t.is(got.length, 0, `nothing delivered before byte ${i}`);
    framer.push(stream.subarray(i, i + 1));
    t.is(framer.pending, (i + 1) % FRAME);
  }
  t.deepEqual(got, [Array.from(stream)]);
});

test('an empty chunk changes nothing', (t) => {
  let frames = 0;
  const framer = new StreamFramer(() => frames++);
  framer.push(new Uint8Array(5));
  framer.push(new Uint8Array(0));
  t.is(framer.pending, 5);
  t.is(frames, 0);
});

test('a custom frame size reassembles frames of that size', (t) => {
  const got: number[] = [];
  const framer = new StreamFramer((view, off) => got.push(view.getUint8(off)), 3);
  framer.push(Uint8Array.of(1, 0, 0, 2, 0));
  framer.push(Uint8Array.of(0, 3, 0, 0, 4));
  t.deepEqual(got, [1, 2, 3]);
  t.is(framer.pending, 1);
});

test('a non-positive or fractional frame size is rejected with RangeError', (t) => {
  for (const size of [0, -32, 1.5]) {
    t.throws(() => new StreamFramer(() => undefined, size), { instanceOf: RangeError }, `size ${size}`);
  }
});

test('push from inside onFrame throws instead of overwriting the frame being read', (t) => {
  let inner: unknown;
  const framer: StreamFramer = new StreamFramer(() => {
    try {
      framer.push(new Uint8Array(1));
    } catch (err) {
      inner = err;
    }
  });
  framer.push(new Uint8Array(FRAME));
  t.true(inner instanceof Error);
  t.is(framer.pending, 0, 'the rejected inner push buffered nothing');
  framer.push(new Uint8Array(1));
  t.is(framer.pending, 1, 'the framer is usable after the handler returns');
});
