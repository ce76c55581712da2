// Checks the OS primitives within one process: SCM_RIGHTS passing of an eventfd and a memfd through a
// socketpair (the received fds are the same open files), sameFile, fdKind, eventfd counters, EOF and
// "nothing yet" from receiveMessage, and PollSet readiness.

import test from 'ava';
import {
  close, closeQuietly, dup, EFD_NONBLOCK, EFD_SEMAPHORE, eventfd, eventfdRead, eventfdWrite, fdKind, fileSize,
  isOpen, mapShared, MAX_MESSAGE, memfd, MSG_DONTWAIT, pipe, POLLHUP, POLLIN, POLLOUT, PollSet, receiveMessage, sameFile,
  sendMessage, sendRaw, socketpair, unmap, write,
} from './os';

test('an eventfd and a memfd sent with SCM_RIGHTS arrive as new fds for the same open files', (t) => {
  const [a, b] = socketpair('seqpacket');
  const efd = eventfd(0, EFD_NONBLOCK);
  const mfd = memfd('os-test', 8192);
  const mine = mapShared(mfd, 8192);
  new Uint8Array(mine.buffer).set([0xde, 0xad, 0xbe, 0xef], 4096);
  try {
    sendMessage(a, Buffer.from('two fds'), [efd, mfd]);
    const msg = receiveMessage(b);
    t.truthy(msg);
    const [e2, m2] = msg!.fds;
    t.is(msg!.data.toString(), 'two fds');
    t.is(msg!.fds.length, 2);
    t.not(e2, efd);
    t.not(m2, mfd);
    t.true(sameFile(e2, efd));
    t.true(sameFile(m2, mfd));
    t.is(fdKind(e2), 'eventfd');
    t.is(fdKind(m2), 'memfd');
    t.is(fileSize(m2), 8192);

    // The received memfd maps the same pages; the received eventfd shares the counter.
    const theirs = mapShared(m2, 4096, 4096);
    t.deepEqual([...new Uint8Array(theirs.buffer, 0, 4)], [0xde, 0xad, 0xbe, 0xef]);
    new Uint8Array(theirs.buffer)[4] = 0x42;
    t.is(new Uint8Array(mine.buffer)[4096 + 4], 0x42);
    unmap(theirs);
    eventfdWrite(efd, 5n);
    t.is(eventfdRead(e2), 5n);
    msg!.fds.forEach(close);
  } finally {
    unmap(mine);
    [a, b, efd, mfd].forEach(closeQuietly);
  }
});

test('a message without fds, and one with many, keep their boundaries on SEQPACKET', (t) => {
  const [a, b] = socketpair('seqpacket');
  const efds = Array.from({ length: 20 }, () => eventfd());
  try {
    sendMessage(a, Buffer.from('first'));
    sendMessage(a, Buffer.from('second'), efds);
    const first = receiveMessage(b)!;
    const second = receiveMessage(b)!;
    t.is(first.data.toString(), 'first');
    t.deepEqual(first.fds, []);
    t.is(second.data.toString(), 'second');
    t.is(second.fds.length, 20);
    t.true(second.fds.every((fd, i) => sameFile(fd, efds[i])));
    second.fds.forEach(close);
  } finally {
    [a, b, ...efds].forEach(closeQuietly);
  }
});

test('receiveMessage returns null at EOF and, with MSG_DONTWAIT, undefined when nothing is waiting', (t) => {
  const [a, b] = socketpair('seqpacket');
  t.is(receiveMessage(b, MSG_DONTWAIT), undefined);
  sendMessage(a, Buffer.from('last words'));
  close(a);
  t.is(receiveMessage(b)!.data.toString(), 'last words', 'queued data is still delivered');
  t.is(receiveMessage(b), null);
  t.is(receiveMessage(b, MSG_DONTWAIT), null);
  close(b);
});

test('a zero-length SEQPACKET record is an empty message, not EOF; an oversized one comes back truncated and the socket stays in step', (t) => {
  const [a, b] = socketpair('seqpacket');
  try {
    sendRaw(a, Buffer.alloc(0));
    const empty = receiveMessage(b);
    t.truthy(empty, 'an empty record is not EOF while the peer is alive');
    t.is(empty!.data.length, 0);
    t.falsy(empty!.truncated);
    t.is(sendRaw(a, Buffer.alloc(MAX_MESSAGE + 1, 7)), MAX_MESSAGE + 1);
    sendMessage(a, Buffer.from('next'));
    const big = receiveMessage(b);
    t.true(big!.truncated, 'over MAX_MESSAGE: truncated');
    t.is(big!.data.length, 0);
    t.is(receiveMessage(b)!.data.toString(), 'next', 'the following record is intact');
  } finally {
    [a, b].forEach(closeQuietly);
  }
});

test('sameFile: true for dups and SCM_RIGHTS copies, false for two eventfds', (t) => {
  const e1 = eventfd();
  const e2 = eventfd();
  const d = dup(e1);
  t.true(sameFile(e1, e1));
  t.true(sameFile(e1, d));
  t.false(sameFile(e1, e2));
  [e1, e2, d].forEach(close);
});

test('fdKind names sockets, pipes, eventfds, memfds and closed fds', (t) => {
  const [s1, s2] = socketpair('stream');
  const [r, w] = pipe();
  const e = eventfd();
  const m = memfd('kind', 4096);
  t.is(fdKind(s1), 'socket');
  t.is(fdKind(r), 'pipe');
  t.is(fdKind(w), 'pipe');
  t.is(fdKind(e), 'eventfd');
  t.is(fdKind(m), 'memfd');
  [s1, s2, r, w, e, m].forEach(close);
  t.is(fdKind(m), 'closed');
  t.false(isOpen(m));
});

test('an eventfd counter adds up writes and resets on read; EFD_SEMAPHORE counts down by one', (t) => {
  const e = eventfd(0, EFD_NONBLOCK);
  t.is(eventfdRead(e), undefined, 'zero and non-blocking: nothing to read');
  eventfdWrite(e);
  eventfdWrite(e, 3n);
  eventfdWrite(e, 0x100000000n);
  t.is(eventfdRead(e), 0x100000004n);
  t.is(eventfdRead(e), undefined);
  close(e);

  const sem = eventfd(2, EFD_NONBLOCK | EFD_SEMAPHORE);
  t.is(eventfdRead(sem), 1n);
  t.is(eventfdRead(sem), 1n);
  t.is(eventfdRead(sem), undefined);
  close(sem);
});

test('PollSet reports readiness per entry, times out with 0, and sees a hung-up peer', (t) => {
  const e = eventfd(0, EFD_NONBLOCK);
  const [r, w] = pipe();
  const [a, b] = socketpair('seqpacket');
  const p = new PollSet(3);
  try {
    p.set(0, e, POLLIN);
    p.set(1, r, POLLIN);
    t.is(p.wait(2, 0), 0);
    t.is(p.revents(0), 0);

    eventfdWrite(e);
    write(w, Buffer.from('x'));
    p.set(0, e, POLLIN);
    p.set(1, r, POLLIN);
    p.set(2, w, POLLOUT);
    t.is(p.wait(3, 1000), 3);
    t.truthy(p.revents(0) & POLLIN);
    t.truthy(p.revents(1) & POLLIN);
    t.truthy(p.revents(2) & POLLOUT);

    close(b);
    p.set(0, a, POLLIN);
    t.is(p.wait(1, 1000), 1);
    t.truthy(p.revents(0) & POLLHUP);
  } finally {
    [e, r, w, a].forEach(closeQuietly);
  }
});
