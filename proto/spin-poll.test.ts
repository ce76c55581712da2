// SpinPolicy: spins until the attempt gives something, gives up at the window or when asked, and
// backs off (blocks at once for a doubling number of waits) after spins that caught nothing.

import test from 'ava';
import { EAGAIN } from './errno';
import { SpinPolicy } from './spin-poll';

const nothing = () => -EAGAIN;

test('a result other than -EAGAIN ends the spin and is returned', (t) => {
  let calls = 0;
  const r = new SpinPolicy(1e9).spin(() => (++calls < 5 ? -EAGAIN : 32));
  t.is(r, 32);
  t.is(calls, 5);
});

test('errors and EOF end the spin as results too', (t) => {
  const p = new SpinPolicy(1e9);
  t.is(p.spin(() => 0), 0);
  t.is(p.spin(() => -104), -104);
});

test('window 0: the attempt is never made, the caller blocks', (t) => {
  let calls = 0;
  t.is(new SpinPolicy(0).spin(() => ++calls), -EAGAIN);
  t.is(calls, 0);
});

test('a spin that catches nothing ends after its window', (t) => {
  const p = new SpinPolicy(2e6);
  const t0 = performance.now();
  t.is(p.spin(nothing), -EAGAIN);
  t.true(performance.now() - t0 >= 2, 'spun for the 2 ms window');
});

test('after empty spins the next 1, 2, 4 ... waits block at once, and a catch resets that', (t) => {
  const p = new SpinPolicy(1e5);
  let calls = 0;
  const counted = () => {
    calls++;
    return -EAGAIN;
  };
  /** How many of the next `waits` spin at all. */
  const spinning = (waits: number) => {
    let n = 0;
    for (let i = 0; i < waits; i++) {
      const before = calls;
      p.spin(counted);
      if (calls > before) n++;
    }
    return n;
  };
  t.is(spinning(1), 1); // empty: skip 1
  t.is(spinning(2), 1); // skipped, then empty: skip 2
  t.is(spinning(3), 1); // skipped twice, then empty: skip 4
  t.is(spinning(5), 1);
  // Skipping 8 now; a spin after them catches its message, and the back-off starts over.
  for (let i = 0; i < 8; i++) t.is(p.spin(() => 1), -EAGAIN);
  t.is(p.spin(() => 1), 1);
  t.is(spinning(1), 1);
  t.is(spinning(2), 1, 'one wait skipped after the first empty spin again, not 16');
});

test('a catch after the window (the spinner was descheduled meanwhile) backs off like an empty spin', (t) => {
  const p = new SpinPolicy(1e6);
  const late = () => {
    const until = performance.now() + 3;
    while (performance.now() < until) { /* the scheduler took the CPU for 3 ms inside the call */ }
    return 32;
  };
  t.is(p.spin(late), 32, 'the message is still returned');
  let spun = false;
  t.is(p.spin(() => {
    spun = true;
    return 1;
  }), -EAGAIN, 'the next wait blocks at once');
  t.false(spun);
});

test('giving up (a kick) ends the spin without backing off', (t) => {
  const p = new SpinPolicy(1e9);
  let asked = 0;
  t.is(p.spin(nothing, () => ++asked === 3), -EAGAIN);
  t.is(asked, 3);
  t.is(p.spin(() => 7), 7, 'the next wait spins again at once');
});

test('a window that is not a whole number of ns >= 0 is refused', (t) => {
  t.throws(() => new SpinPolicy(-1), { instanceOf: RangeError, message: /-1/ });
  t.throws(() => new SpinPolicy(Number.NaN), { instanceOf: RangeError });
});
