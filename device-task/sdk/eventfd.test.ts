// Checks the device side of ioeventfds and irqfds on real eventfds: signal() adds to the counter (an
// irqfd write), wait()/waitFor() read and reset it (the doorbell count), and waitFor() times out.

import test from 'ava';
import { close, EFD_NONBLOCK, eventfd, eventfdRead, eventfdWrite } from '../../proto/os';
import { Eventfd, isEventWaiter } from './eventfd';

test('signal() adds to the counter the kernel reads', (t) => {
  const fd = eventfd(0, EFD_NONBLOCK);
  const irq = new Eventfd(fd, 'irq');
  irq.signal();
  irq.signal(2n);
  t.is(eventfdRead(fd), 3n);
  close(fd);
});

test('wait() returns how many doorbell writes accumulated and resets the counter', (t) => {
  const fd = eventfd(0, EFD_NONBLOCK);
  const doorbell = new Eventfd(fd, 'doorbell');
  for (let i = 0; i < 5; i++) eventfdWrite(fd);
  t.is(doorbell.wait(), 5n);
  t.is(doorbell.wait(), 0n, 'nothing left (non-blocking eventfd)');
  close(fd);
});

test('waitFor() returns the count when rung, undefined after the timeout', (t) => {
  const fd = eventfd(0, EFD_NONBLOCK);
  const doorbell = new Eventfd(fd, 'doorbell');
  t.true(isEventWaiter(doorbell));
  t.is(doorbell.waitFor(10), undefined);
  eventfdWrite(fd, 4n);
  t.is(doorbell.waitFor(1000), 4n);
  t.is(doorbell.waitFor(0), undefined);
  close(fd);
});
