// Checks the control-plane contract in one process: ioctl requests and replies survive encoding
// (64-bit arguments included), a reply is never an empty message, and ioctlRaw's round trip over a
// SEQPACKET socketpair attaches and receives fds, and maps a dead or closed peer to EIO / EBADF.

import test from 'ava';
import { decodeReply, decodeRequest, encodeReply, encodeRequest, ioctlRaw } from './control';
import { EBADF, EINVAL, EIO } from './errno';
import { IOEVENTFD, KVM_CHECK_EXTENSION, KVM_IOEVENTFD, KVM_SET_IOREGION } from './kvm-uapi';
import { close, closeQuietly, eventfd, fdKind, receiveMessage, sameFile, sendMessage, socketpair } from './os';

test('a request round-trips, with the largest 64-bit argument and a request number above 2^31', (t) => {
  const data = Buffer.from([1, 2, 3, 0, 255]);
  const r = decodeRequest(encodeRequest({ request: KVM_SET_IOREGION, arg: 0xffffffffffffffffn, data, fdNumbers: [5, 7] }));
  t.is(r.request, 0x4040ae49);
  t.is(r.arg, 0xffffffffffffffffn);
  t.deepEqual([...r.data], [...data]);
  t.deepEqual(r.fdNumbers, [5, 7]);
});

test('request arguments at the edges of 64 bits survive exactly', (t) => {
  for (const arg of [0n, 1n, 0xffffffffn, 0x100000000n, 1n << 63n, (1n << 63n) - 1n, 0xfffffffffffffffen]) {
    t.is(decodeRequest(encodeRequest({ request: KVM_CHECK_EXTENSION, arg })).arg, arg, `0x${arg.toString(16)}`);
  }
  t.is(decodeRequest(encodeRequest({ request: KVM_CHECK_EXTENSION, arg: -1n })).arg, 0xffffffffffffffffn, 'a negative argument is its u64 bit pattern');
});

test('a request with nothing but its number decodes with empty fields', (t) => {
  const r = decodeRequest(encodeRequest({ request: 0xae00 }));
  t.deepEqual(r, { request: 0xae00, arg: 0n, data: Buffer.alloc(0), fdNumbers: [] });
});

test('replies round-trip: ret, errno, data, detail', (t) => {
  const r = decodeReply(encodeReply({ ret: -1, errno: EINVAL, detail: 'memory_size 0x1001 is not page aligned' }));
  t.like(r, { ret: -1, errno: EINVAL, detail: 'memory_size 0x1001 is not page aligned' });
  const big = decodeReply(encodeReply({ ret: 2 ** 40, data: Buffer.from('abc') }));
  t.is(big.ret, 2 ** 40);
  t.is(big.data.toString(), 'abc');
});

test('a reply is never an empty message, even ret 0 with nothing else (empty would read as EOF)', (t) => {
  for (const reply of [{}, { ret: 0 }, { ret: 0, errno: 0, detail: '' }]) {
    const bytes = encodeReply(reply);
    t.true(bytes.length > 0);
    t.is(decodeReply(bytes).ret, 0);
  }
});

test('a malformed request throws (the server answers it with EINVAL)', (t) => {
  t.throws(() => decodeRequest(Buffer.from([0x12, 0x05, 0x01])));
});

test('ioctlRaw sends one request and returns the reply, replacing ret by the fd that came with it', (t) => {
  const [vmm, model] = socketpair('seqpacket');
  const efd = eventfd();
  try {
    // SEQPACKET queues the reply, so it can be sent before the request it answers.
    sendMessage(model, encodeReply({ ret: 0, detail: 'here is an fd' }), [efd]);
    const r = ioctlRaw(vmm, KVM_CHECK_EXTENSION, 0xffffffffffffffffn);
    t.is(r.fds.length, 1);
    t.is(r.ret, r.fds[0]);
    t.is(fdKind(r.fds[0]), 'eventfd');
    t.true(sameFile(r.fds[0], efd));
    t.is(r.detail, 'here is an fd');
    const req = receiveMessage(model);
    t.truthy(req);
    t.like(decodeRequest(req!.data), { request: KVM_CHECK_EXTENSION, arg: 0xffffffffffffffffn, fdNumbers: [] });
    r.fds.forEach(closeQuietly);
  } finally {
    [vmm, model, efd].forEach(closeQuietly);
  }
});

test('ioctlRaw attaches the fds a struct names (KVM_IOEVENTFD.fd) plus extra ones, each once', (t) => {
  const [vmm, model] = socketpair('seqpacket');
  const efd = eventfd();
  const extra = eventfd();
  try {
    const arg = Buffer.alloc(IOEVENTFD.SIZE);
    arg.writeInt32LE(efd, IOEVENTFD.fd);
    sendMessage(model, encodeReply({ ret: 0 }));
    t.is(ioctlRaw(vmm, KVM_IOEVENTFD, arg, [extra, efd]).ret, 0);
    const msg = receiveMessage(model)!;
    const req = decodeRequest(msg.data);
    t.deepEqual(req.fdNumbers, [extra, efd]);
    t.is(msg.fds.length, 2);
    t.true(sameFile(msg.fds[0], extra));
    t.true(sameFile(msg.fds[1], efd));
    t.is(req.data.readInt32LE(IOEVENTFD.fd), efd, 'the struct keeps the caller\'s own number');
    msg.fds.forEach(closeQuietly);
  } finally {
    [vmm, model, efd, extra].forEach(closeQuietly);
  }
});

test('an ioctl on a socket whose peer is gone fails with EIO, on a closed fd with EBADF', (t) => {
  const [vmm, model] = socketpair('seqpacket');
  close(model);
  const dead = ioctlRaw(vmm, KVM_CHECK_EXTENSION, 1);
  t.like(dead, { ret: -1, errno: EIO });
  close(vmm);
  t.like(ioctlRaw(vmm, KVM_CHECK_EXTENSION, 1), { ret: -1, errno: EBADF });
});

test('an empty reply message is malformed (no ret) and gives EIO, never a success', (t) => {
  const [vmm, model] = socketpair('seqpacket');
  try {
    sendMessage(model, new Uint8Array(0));
    const r = ioctlRaw(vmm, KVM_CHECK_EXTENSION, 1);
    t.like(r, { ret: -1, errno: EIO });
  } finally {
    [vmm, model].forEach(closeQuietly);
  }
});
