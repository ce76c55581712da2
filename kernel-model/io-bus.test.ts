// Checks IoBus in memory against virt/kvm/kvm_main.c's kvm_io_bus: kvm_io_bus_cmp, the sorted
// registration (equal ranges in registration order), first-match lookup, dispatch order and errno
// handling, and the NR_IOBUS_DEVS limit that ioeventfds do not count toward.

import test from 'ava';
import { EIO, ENOSPC, EOPNOTSUPP } from '../proto/errno';
import { NR_IOBUS_DEVS } from '../proto/kvm-uapi';
import { busRead, busWrite, ioBusCmp, IoBus, IoDevice, ReadResult } from './io-bus';

/** A device that records the accesses offered to it and answers with a fixed errno (and value). */
class Dev implements IoDevice {
  readonly calls: string[] = [];
  constructor(readonly name: string, private readonly errno = 0, private readonly value = 0n) {}
  write(addr: bigint, len: number, value: bigint): number {
    this.calls.push(`w 0x${addr.toString(16)}/${len}=0x${value.toString(16)}`);
    return this.errno;
  }
  read(addr: bigint, len: number, out: ReadResult): number {
    this.calls.push(`r 0x${addr.toString(16)}/${len}`);
    if (this.errno === 0) out.value = this.value;
    return this.errno;
  }
}

function names(bus: IoBus<Dev>): string[] {
  return bus.ranges.map((r) => r.dev.name);
}

test('kvm_io_bus_cmp: below is -1, inside (or the same start and shorter) is 0, past the end is 1', (t) => {
  t.is(ioBusCmp(0x0fn, 1, 0x10n, 4n), -1);
  t.is(ioBusCmp(0x10n, 4, 0x10n, 4n), 0);
  t.is(ioBusCmp(0x10n, 2, 0x10n, 4n), 0);
  t.is(ioBusCmp(0x12n, 2, 0x10n, 4n), 0);
  t.is(ioBusCmp(0x13n, 2, 0x10n, 4n), 1, 'crossing the end');
  t.is(ioBusCmp(0x10n, 8, 0x10n, 4n), 1, 'same start, longer');
  t.is(ioBusCmp(0x14n, 1, 0x10n, 4n), 1);
});

test('kvm_io_bus_cmp: a len-0 range matches only accesses that start exactly at its address', (t) => {
  for (const len of [1, 2, 4, 8]) t.is(ioBusCmp(0x100n, len, 0x100n, 0n), 0, `len ${len}`);
  t.is(ioBusCmp(0x101n, 1, 0x100n, 0n), 1);
  t.is(ioBusCmp(0xffn, 2, 0x100n, 0n), -1);
});

test('registration keeps the bus sorted by address, a shorter range before a longer one at the same start', (t) => {
  const bus = new IoBus<Dev>();
  bus.register(0x300n, 4, new Dev('c'));
  bus.register(0x100n, 8, new Dev('a8'));
  bus.register(0x100n, 4, new Dev('a4'));
  bus.register(0x200n, 4, new Dev('b'));
  t.deepEqual(names(bus), ['a4', 'a8', 'b', 'c']);
  const other = new IoBus<Dev>();
  other.register(0x100n, 4, new Dev('a4'));
  other.register(0x100n, 8, new Dev('a8'));
  t.deepEqual(names(other), ['a4', 'a8'], 'whatever order they were registered in');
});

test('equal ranges keep their registration order, and so are tried in it', (t) => {
  const bus = new IoBus<Dev>();
  const devs = [new Dev('first', EOPNOTSUPP), new Dev('second', EOPNOTSUPP), new Dev('third', EOPNOTSUPP)];
  bus.register(0x500n, 4, new Dev('before'));
  for (const d of devs) bus.register(0x1000n, 4, d);
  bus.register(0x2000n, 4, new Dev('after'));
  t.deepEqual(names(bus), ['before', 'first', 'second', 'third', 'after']);
  t.is(busWrite(bus as IoBus<IoDevice>, 0x1000n, 4, 7n), EOPNOTSUPP);
  t.deepEqual(devs.map((d) => d.calls.length), [1, 1, 1]);
});

test('firstIndex finds the first of several matching ranges, or -1', (t) => {
  const bus = new IoBus<Dev>();
  for (let i = 0; i < 20; i++) bus.register(BigInt(0x1000 * i), 0x100, new Dev(`d${i}`));
  bus.register(0x5000n, 0x100, new Dev('twin1'));
  bus.register(0x5000n, 0x100, new Dev('twin2'));
  const i = bus.firstIndex(0x5010n, 4);
  t.is(bus.ranges[i].dev.name, 'd5');
  t.is(bus.ranges[i + 2].dev.name, 'twin2');
  t.is(bus.firstIndex(0x50fen, 4), -1, 'crossing the end of every range');
  t.is(bus.firstIndex(0x5100n, 1), -1);
  t.is(bus.ranges[bus.firstIndex(0x13000n, 1)].dev.name, 'd19', 'the last range');
});

test('a repeated lookup answers as a fresh search would, also after the bus changed between the two', (t) => {
  const bus = new IoBus<Dev>();
  for (let i = 0; i < 1000; i++) bus.register(BigInt(0x1000 * i), 8, new Dev(`d${i}`));
  const at = (addr: bigint, len: number) => bus.ranges[bus.firstIndex(addr, len)]?.dev.name;
  t.is(at(0x1f4000n, 4), 'd500');
  t.is(at(0x1f4000n, 4), 'd500', 'the same access again');
  t.is(bus.firstIndex(0x1f4000n, 16), -1, 'the same address, a length that crosses the end');
  const before = new Dev('before');
  bus.register(0x1000n, 8, before);
  t.is(bus.firstIndex(0x1000n, 4), 1, 'a new range sorts after the equal one registered earlier');
  t.is(at(0x1f4000n, 4), 'd500', 'found at its new index after a register');
  bus.unregister(bus.ranges[bus.firstIndex(0x1f4000n, 4)].dev);
  t.is(bus.firstIndex(0x1f4000n, 4), -1, 'gone after its unregister');
  bus.register(0x1f4000n, 8, new Dev('again'));
  t.is(at(0x1f4000n, 4), 'again');
});

test('a len-0 device takes accesses of any length at its address only', (t) => {
  const bus = new IoBus<IoDevice>();
  const d = new Dev('exact');
  bus.register(0x100n, 0, d);
  for (const len of [1, 2, 4, 8]) t.is(busWrite(bus, 0x100n, len, 1n), 0, `len ${len}`);
  t.is(busWrite(bus, 0x101n, 1, 1n), EOPNOTSUPP);
  t.is(busWrite(bus, 0xfen, 4, 1n), EOPNOTSUPP, 'an access that covers the address but starts below it');
  t.is(d.calls.length, 4);
});

test('the first device that handles an access wins; EOPNOTSUPP falls through to the next', (t) => {
  const bus = new IoBus<IoDevice>();
  const declines = new Dev('declines', EOPNOTSUPP);
  const takes = new Dev('takes', 0, 0x1234n);
  const never = new Dev('never', 0, 0x9999n);
  bus.register(0x40n, 8, declines);
  bus.register(0x40n, 8, takes);
  bus.register(0x40n, 8, never);
  t.is(busWrite(bus, 0x44n, 2, 0xbeefn), 0);
  const out: ReadResult = { value: 0n };
  t.is(busRead(bus, 0x40n, 8, out), 0);
  t.is(out.value, 0x1234n);
  t.deepEqual(declines.calls, ['w 0x44/2=0xbeef', 'r 0x40/8']);
  t.deepEqual(takes.calls, ['w 0x44/2=0xbeef', 'r 0x40/8']);
  t.deepEqual(never.calls, []);
});

test('any other errno stops the walk and is returned', (t) => {
  const bus = new IoBus<IoDevice>();
  const fails = new Dev('fails', EIO);
  const never = new Dev('never');
  bus.register(0x40n, 8, fails);
  bus.register(0x40n, 8, never);
  t.is(busWrite(bus, 0x40n, 4, 1n), EIO);
  t.is(busRead(bus, 0x40n, 4, { value: 0n }), EIO);
  t.deepEqual(never.calls, []);
});

test('an access nobody matches, or everybody declines, is EOPNOTSUPP (an exit to userspace)', (t) => {
  const bus = new IoBus<IoDevice>();
  t.is(busWrite(bus, 0x40n, 4, 1n), EOPNOTSUPP, 'empty bus');
  bus.register(0x40n, 4, new Dev('declines', EOPNOTSUPP));
  t.is(busWrite(bus, 0x40n, 4, 1n), EOPNOTSUPP);
  t.is(busRead(bus, 0x80n, 4, { value: 0n }), EOPNOTSUPP);
});

test('unregister removes exactly that device', (t) => {
  const bus = new IoBus<Dev>();
  const a = new Dev('a');
  const b = new Dev('b');
  bus.register(0x10n, 4, a);
  bus.register(0x10n, 4, b);
  t.true(bus.unregister(a));
  t.false(bus.unregister(a));
  t.deepEqual(names(bus), ['b']);
});

test(`NR_IOBUS_DEVS (${NR_IOBUS_DEVS}) devices fit and one more is ENOSPC; ioeventfds do not count`, (t) => {
  const bus = new IoBus<Dev>();
  for (let i = 0; i < 1500; i++) t.is(bus.register(BigInt(i * 8), 8, new Dev(`e${i}`), true), 0);
  for (let i = 0; i < NR_IOBUS_DEVS; i++) {
    if (bus.register(0x100000n + BigInt(i * 8), 8, new Dev(`d${i}`)) !== 0) return t.fail(`device ${i} was refused`);
  }
  t.is(bus.register(0x200000n, 8, new Dev('one too many')), ENOSPC);
  t.is(bus.register(0x200000n, 8, new Dev('ioeventfd on a full bus'), true), ENOSPC,
    'kvm_io_bus_register_dev checks room for every registration, ioeventfds included');
  t.is(bus.devCount, 1500 + NR_IOBUS_DEVS);
  const gone = bus.ranges.find((r) => !r.ioeventfd)!.dev;
  bus.unregister(gone);
  t.is(bus.register(0x200000n, 8, new Dev('fits again')), 0);
  const ioeventfd = bus.ranges.find((r) => r.ioeventfd)!.dev;
  bus.unregister(ioeventfd);
  t.is(bus.register(0x200008n, 8, new Dev('still full')), ENOSPC, 'removing an ioeventfd frees no room');
});
