// The doorbell device in memory: a ring reads the request at the mailbox, writes request + 1 and the
// ring count after it, raises 'irq'; a mailbox outside guest RAM is logged, never thrown.

import test from 'ava';
import { fakeDeviceContext } from '../sdk/conformance';
import { doorbell } from './doorbell';

function device(mailbox: unknown = '0x100') {
  const fake = fakeDeviceContext({ config: { mailbox }, eventfds: ['doorbell', 'irq'] });
  const view = new DataView(fake.ram.buffer);
  return { ...fake, view, dev: doorbell.create(fake.ctx) };
}

test("it listens on the 'doorbell' eventfd", (t) => {
  t.deepEqual(doorbell.listen, ['doorbell']);
});

test('a ring answers request + 1 in the mailbox, counts rings and raises irq', (t) => {
  const { dev, view, signal, logs } = device();
  view.setBigUint64(0x100, 41n, true);
  dev.onEventfd!('doorbell', 1n);
  t.is(view.getBigUint64(0x108, true), 42n);
  t.is(view.getBigUint64(0x110, true), 1n);
  t.deepEqual(signal('irq')?.counts, [1n]);
  view.setBigUint64(0x100, 0xffff_ffff_ffff_ffffn, true);
  dev.onEventfd!('doorbell', 3n);
  t.is(view.getBigUint64(0x108, true), 0n, 'request + 1 wraps at 2^64');
  t.is(view.getBigUint64(0x110, true), 4n, 'the ring count adds the eventfd counter (3 coalesced rings)');
  t.deepEqual(signal('irq')?.counts, [1n, 1n]);
  t.deepEqual(logs, []);
});

test('a numeric mailbox in the config works too', (t) => {
  const { dev, view } = device(0x200);
  view.setBigUint64(0x200, 7n, true);
  dev.onEventfd!('doorbell', 1n);
  t.is(view.getBigUint64(0x208, true), 8n);
});

test('other eventfd names are ignored', (t) => {
  const { dev, view, signal } = device();
  dev.onEventfd!('irq', 1n);
  dev.onEventfd!('', 5n);
  t.is(view.getBigUint64(0x110, true), 0n);
  t.deepEqual(signal('irq')?.counts, []);
});

test('a mailbox outside guest RAM logs, raises no irq and does not throw', (t) => {
  for (const mailbox of ['0x100000', '0xfffffffffffffff8', '0xffff8', -16]) {
    const { dev, signal, logs } = device(mailbox);
    t.notThrows(() => dev.onEventfd!('doorbell', 1n), String(mailbox));
    t.deepEqual(signal('irq')?.counts, [], String(mailbox));
    t.is(logs.length, 1, String(mailbox));
    t.regex(logs[0], /mailbox 0x[0-9a-f-]+ is outside guest memory/);
  }
});

test('reset restarts the ring count', (t) => {
  const { dev, view } = device();
  dev.onEventfd!('doorbell', 5n);
  dev.reset();
  dev.onEventfd!('doorbell', 1n);
  t.is(view.getBigUint64(0x110, true), 1n);
});

test('a mailbox config that is not an address is rejected at create, naming config.mailbox', (t) => {
  const fake = fakeDeviceContext({ config: { mailbox: 'kitchen' } });
  t.throws(() => doorbell.create(fake.ctx), { message: /config\.mailbox/ });
});
