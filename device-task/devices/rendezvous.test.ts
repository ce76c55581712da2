// The rendezvous device: a read signals 'out' and answers 1 when 'in' fires within the timeout,
// 0 otherwise; checked with a test double and with real eventfds (no second process).

import test from 'ava';
import { closeQuietly, eventfd, eventfdWrite } from '../../proto/os';
import { fakeDeviceContext } from '../sdk/conformance';
import { Eventfd, EventSignal, EventWaiter } from '../sdk/eventfd';
import { rendezvous } from './rendezvous';

test("a read signals 'out' and answers 1 when 'in' delivers, 0 when it times out", (t) => {
  const fake = fakeDeviceContext({ config: { timeout_ms: 10 }, eventfds: ['out'] });
  const waits: number[] = [];
  let partner: bigint | undefined = 1n;
  const input: EventSignal & EventWaiter = {
    signal: () => undefined,
    waitFor: (ms) => {
      waits.push(ms);
      return partner;
    },
  };
  fake.ctx.eventfds.set('in', input);
  const d = rendezvous.create(fake.ctx);
  t.is(d.read(0n, 8, 0n), 1n);
  partner = undefined;
  t.is(d.read(0n, 1, 0n), 0n);
  t.deepEqual(fake.signal('out')?.counts, [1n, 1n]);
  t.deepEqual(waits, [10, 10], 'waits with config.timeout_ms');
});

test("without an 'in' eventfd a read answers 0 at once", (t) => {
  const fake = fakeDeviceContext({ eventfds: [] });
  const d = rendezvous.create(fake.ctx);
  const t0 = Date.now();
  t.is(d.read(0n, 8, 0n), 0n);
  t.true(Date.now() - t0 < 1000);
});

test('with real eventfds: a partner that already signalled is met at once; none means 0 after the timeout', (t) => {
  const inFd = eventfd();
  const outFd = eventfd();
  t.teardown(() => [inFd, outFd].forEach(closeQuietly));
  const fake = fakeDeviceContext({ config: { timeout_ms: '30' }, eventfds: [] });
  fake.ctx.eventfds.set('in', new Eventfd(inFd, 'in'));
  fake.ctx.eventfds.set('out', new Eventfd(outFd, 'out'));
  const d = rendezvous.create(fake.ctx);
  eventfdWrite(inFd, 1n);
  t.is(d.read(0n, 8, 0n), 1n);
  const t0 = Date.now();
  t.is(d.read(0n, 8, 0n), 0n, 'the partner signal was consumed by the first read');
  t.true(Date.now() - t0 >= 25, `waited ${Date.now() - t0} ms`);
  t.is(new Eventfd(outFd, 'out').waitFor(0), 2n, "'out' was signalled by both reads");
});

test('the default timeout is 5000 ms; a timeout that is not a whole number of ms is rejected', (t) => {
  const waits: number[] = [];
  const fake = fakeDeviceContext({ eventfds: [] });
  const input: EventSignal & EventWaiter = {
    signal: () => undefined,
    waitFor: (ms) => {
      waits.push(ms);
      return undefined;
    },
  };
  fake.ctx.eventfds.set('in', input);
  rendezvous.create(fake.ctx).read(0n, 8, 0n);
  t.deepEqual(waits, [5000]);
  for (const bad of [-1, 1.5, 'soon', {}]) {
    t.throws(() => rendezvous.create(fakeDeviceContext({ config: { timeout_ms: bad } }).ctx), { message: /config\.timeout_ms/ });
  }
});
