// Checks KVM_IOEVENTFD in memory: the collision rule (ioeventfd_check_collision) as a truth table,
// the handler's validation order and the bus-full cases a selftest cannot reach (ENOSPC, and the
// fast-MMIO twin's failure undoing the MMIO registration) against a stand-in VM, and the vCPU-side
// device's matching (ioeventfd_in_range) on a real eventfd.

import test from 'ava';
import { EBADF, EEXIST, EINVAL, ENOENT, ENOSPC, EOPNOTSUPP } from '../proto/errno';
import {
  IOEVENTFD, KVM_IOEVENTFD, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO,
  KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY,
} from '../proto/kvm-uapi';
import { closeQuietly, dup, EFD_NONBLOCK, eventfd, eventfdRead, isOpen, pipe } from '../proto/os';
import type { BusName } from './io-bus';
import { busFromFlags, ioeventfd, ioeventfdCollides, Ioeventfd, rangesOverlap } from './ioeventfd';
import { ioeventfdDevice } from './ioeventfd-device';
import { IoctlFailure, ReceivedFds } from './server';
import type { Vm } from './vm';
import type { DeviceDesc, DeviceFields, IoeventfdFields } from './device-desc';

const DM = KVM_IOEVENTFD_FLAG_DATAMATCH;

const e = (over: Partial<Ioeventfd>): Ioeventfd => ({ bus: 'mmio', addr: 0x1000n, len: 4, wildcard: true, datamatch: 0n, ...over });

test('collision needs the same bus and address', (t) => {
  t.true(ioeventfdCollides(e({}), e({})));
  t.false(ioeventfdCollides(e({}), e({ addr: 0x1002n })), 'overlapping ranges at different addresses');
  t.false(ioeventfdCollides(e({}), e({ bus: 'pio' })));
  t.false(ioeventfdCollides(e({}), e({ bus: 'ccw' })));
});

test('collision: a len-0 entry collides with everything at its address, in both orders', (t) => {
  for (const len of [0, 1, 2, 4, 8]) {
    t.true(ioeventfdCollides(e({ len: 0 }), e({ len, wildcard: false, datamatch: 3n })), `len 0 vs ${len}`);
    t.true(ioeventfdCollides(e({ len, wildcard: false, datamatch: 3n }), e({ len: 0 })), `len ${len} vs 0`);
  }
});

test('collision: equal lengths collide when either is a wildcard or the datamatch values are equal', (t) => {
  t.true(ioeventfdCollides(e({}), e({ wildcard: false, datamatch: 5n })));
  t.true(ioeventfdCollides(e({ wildcard: false, datamatch: 5n }), e({})));
  t.true(ioeventfdCollides(e({ wildcard: false, datamatch: 5n }), e({ wildcard: false, datamatch: 5n })));
  t.false(ioeventfdCollides(e({ wildcard: false, datamatch: 5n }), e({ wildcard: false, datamatch: 6n })));
  t.false(ioeventfdCollides(e({ wildcard: false, datamatch: 1n }), e({ wildcard: false, datamatch: 0x1_0000_0001n })), 'no truncation to len');
});

test('collision: different non-zero lengths never collide', (t) => {
  t.false(ioeventfdCollides(e({ len: 2 }), e({ len: 4 })));
  t.false(ioeventfdCollides(e({ len: 8 }), e({ len: 1 })));
});

test('rangesOverlap is "any byte in common"', (t) => {
  t.true(rangesOverlap(0x100n, 8n, 0x107n, 1n));
  t.false(rangesOverlap(0x100n, 8n, 0x108n, 1n));
  t.false(rangesOverlap(0x108n, 4n, 0x100n, 8n));
  t.true(rangesOverlap(0x0fcn, 8n, 0x100n, 0x100n));
});

test('bus from flags: PIO wins over VIRTIO_CCW_NOTIFY, otherwise MMIO', (t) => {
  t.is(busFromFlags(0), 'mmio');
  t.is(busFromFlags(KVM_IOEVENTFD_FLAG_PIO), 'pio');
  t.is(busFromFlags(KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY), 'ccw');
  t.is(busFromFlags(KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY | KVM_IOEVENTFD_FLAG_PIO), 'pio');
});

// ---- the ioctl against a stand-in VM -----------------------------------------------------------------

/** The part of Vm the ioeventfd feature uses, with buses that can be declared full. */
class FakeVm {
  readonly state = new Map<string, unknown>();
  readonly devices = new Map<number, { desc: DeviceFields & { key: number }; fds: number[] }>();
  readonly full = new Set<BusName>();
  private next = 1;
  busFull(bus: BusName): boolean {
    return this.full.has(bus);
  }
  addDevice(desc: DeviceFields, fds: number[]): number {
    const key = this.next++;
    this.devices.set(key, { desc: { ...desc, key }, fds });
    return key;
  }
  removeDevice(key: number): void {
    this.devices.get(key)?.fds.forEach(closeQuietly);
    this.devices.delete(key);
  }
  closeAll(): void {
    for (const k of [...this.devices.keys()]) this.removeDevice(k);
  }
}

interface Call {
  addr?: bigint;
  len?: number;
  flags?: number;
  datamatch?: bigint;
  /** The caller's fd number and the fd that "arrived" for it (undefined: none arrived). */
  number?: number;
  fd?: number;
}

/** Run KVM_IOEVENTFD on the fake VM; returns 0 or the errno. */
function call(vm: FakeVm, c: Call): number {
  const data = Buffer.alloc(IOEVENTFD.SIZE);
  data.writeBigUInt64LE(c.datamatch ?? 0n, IOEVENTFD.datamatch);
  data.writeBigUInt64LE(c.addr ?? 0x1000n, IOEVENTFD.addr);
  data.writeUInt32LE(c.len ?? 4, IOEVENTFD.len);
  data.writeInt32LE(c.number ?? 7, IOEVENTFD.fd);
  data.writeUInt32LE(c.flags ?? 0, IOEVENTFD.flags);
  const fds = new ReceivedFds(c.fd === undefined ? [] : [c.number ?? 7], c.fd === undefined ? [] : [c.fd]);
  try {
    ioeventfd.ioctls![KVM_IOEVENTFD](vm as unknown as Vm, { request: KVM_IOEVENTFD, arg: 0n, data, fdNumbers: [] }, fds);
    return 0;
  } catch (err) {
    if (err instanceof IoctlFailure) return err.errno;
    throw err;
  } finally {
    fds.closeRest();
  }
}

/** A fresh eventfd standing for the fd that arrived with the ioctl (the handler owns it afterwards). */
const arrived = () => eventfd(0, EFD_NONBLOCK);

test('assign: validation order is len, wrap, flags, len 0 + DATAMATCH, then the fd', (t) => {
  const vm = new FakeVm();
  t.is(call(vm, { len: 3 }), EINVAL, 'bad len, no fd');
  t.is(call(vm, { addr: 0xffff_ffff_ffff_fffcn, len: 8 }), EINVAL, 'wrap, no fd');
  t.is(call(vm, { flags: 0x20 }), EINVAL, 'bad flags, no fd');
  t.is(call(vm, { len: 0, flags: DM }), EINVAL, 'len 0 + DATAMATCH, no fd');
  t.is(call(vm, {}), EBADF, 'no fd arrived');
  const [r, w] = pipe();
  t.is(call(vm, { fd: r }), EINVAL, 'a pipe');
  t.false(isOpen(r), 'the rejected fd was closed');
  closeQuietly(w);
  t.is(vm.devices.size, 0);
});

test('assign: a bus full of NR_IOBUS_DEVS other devices is ENOSPC, after the collision check', (t) => {
  const vm = new FakeVm();
  t.is(call(vm, { fd: arrived() }), 0);
  vm.full.add('mmio');
  t.is(call(vm, { fd: arrived() }), EEXIST, 'a collision is reported before the full bus');
  t.is(call(vm, { addr: 0x2000n, fd: arrived() }), ENOSPC);
  t.is(call(vm, { addr: 0x2000n, flags: KVM_IOEVENTFD_FLAG_PIO, fd: arrived() }), 0, 'the PIO bus has room');
  t.is(vm.devices.size, 2);
  vm.closeAll();
});

test('assign: len 0 on MMIO adds a fast-MMIO twin; if that bus is full the MMIO entry is undone', (t) => {
  const vm = new FakeVm();
  t.is(call(vm, { len: 0, fd: arrived() }), 0);
  t.deepEqual([...vm.devices.values()].map((d) => d.desc.bus), ['mmio', 'fast_mmio']);
  t.is(call(vm, { len: 0, flags: KVM_IOEVENTFD_FLAG_PIO, fd: arrived() }), 0, 'no twin on PIO');
  t.is(vm.devices.size, 3);
  vm.full.add('fast_mmio');
  const fd = arrived();
  t.is(call(vm, { addr: 0x3000n, len: 0, fd }), ENOSPC);
  t.is(vm.devices.size, 3, 'the MMIO half was removed again');
  t.false(isOpen(fd), 'and its eventfd reference dropped');
  t.is(call(vm, { addr: 0x3000n, len: 4, fd: arrived() }), 0, 'nothing is left at that address');
  vm.closeAll();
});

test('assign: an ioregion sharing a byte on the same bus is EEXIST (len 0 spans 8 bytes)', (t) => {
  const vm = new FakeVm();
  vm.addDevice({
    kind: 'ioregion', bus: 'mmio', addr: 0x100n, len: 0x10n, size: 0x10n, userData: 0n, posted: false, pio: false,
    readTransport: 'seqpacket', writeTransport: 'seqpacket', context: -1, statSlot: 0,
  }, []);
  t.is(call(vm, { addr: 0x10cn, len: 4, fd: arrived() }), EEXIST);
  t.is(call(vm, { addr: 0xf9n, len: 0, fd: arrived() }), EEXIST);
  t.is(call(vm, { addr: 0xf8n, len: 0, fd: arrived() }), 0);
  t.is(call(vm, { addr: 0x110n, len: 8, fd: arrived() }), 0);
  t.is(call(vm, { addr: 0x100n, len: 4, flags: KVM_IOEVENTFD_FLAG_PIO, fd: arrived() }), 0);
  vm.closeAll();
});

test('deassign: exact match with the same eventfd; len 0 also drops the twin; otherwise ENOENT', (t) => {
  const vm = new FakeVm();
  const efd = arrived();
  const again = () => eventfd(0, EFD_NONBLOCK);
  t.is(call(vm, { len: 0, fd: efd }), 0);
  t.is(call(vm, { len: 0, flags: KVM_IOEVENTFD_FLAG_DEASSIGN, fd: again() }), ENOENT, 'another eventfd');
  t.is(call(vm, { len: 3, flags: KVM_IOEVENTFD_FLAG_DEASSIGN, fd: again() }), ENOENT, 'len not validated');
  t.is(vm.devices.size, 2);
  // The same eventfd arrives as a new fd (a dup), as SCM_RIGHTS delivers it.
  t.is(call(vm, { len: 0, flags: KVM_IOEVENTFD_FLAG_DEASSIGN, fd: dup(vm.devices.values().next().value!.fds[0]) }), 0);
  t.is(vm.devices.size, 0, 'both the MMIO entry and its fast-MMIO twin are gone');
  vm.closeAll();
});

// ---- the vCPU thread's device ----------------------------------------------------------------------

function device(over: Partial<DeviceDesc & IoeventfdFields>) {
  const fd = eventfd(0, EFD_NONBLOCK);
  const desc: DeviceDesc & IoeventfdFields = { key: 1, kind: 'ioeventfd', bus: 'mmio', addr: 0x1000n, len: 4n, wildcard: true, datamatch: 0n, fds: [fd], ...over };
  return { fd, d: ioeventfdDevice({ ...desc, fds: [fd] }) };
}

test('device: an exact hit signals 1 and is handled; address or size mismatches are not its', (t) => {
  const { fd, d } = device({});
  t.is(d.dev.write(0x1000n, 4, 0x55n), 0);
  t.is(d.dev.write(0x1000n, 4, 0x66n), 0);
  t.is(d.dev.write(0x1001n, 4, 0x55n), EOPNOTSUPP);
  t.is(d.dev.write(0x1000n, 2, 0x55n), EOPNOTSUPP);
  t.is(eventfdRead(fd), 2n);
  d.close();
});

test('device: len 0 takes any size at its address (the fast-MMIO probe has size 0)', (t) => {
  const { fd, d } = device({ len: 0n });
  for (const size of [0, 1, 2, 4, 8]) t.is(d.dev.write(0x1000n, size, 0n), 0);
  t.is(d.dev.write(0x1004n, 4, 0n), EOPNOTSUPP);
  t.is(eventfdRead(fd), 5n);
  d.close();
});

test('device: DATAMATCH compares the access value as an unsigned value of its size', (t) => {
  const { fd, d } = device({ len: 2n, wildcard: false, datamatch: 0xbeefn });
  t.is(d.dev.write(0x1000n, 2, 0xbeefn), 0);
  t.is(d.dev.write(0x1000n, 2, 0xbeeen), EOPNOTSUPP);
  t.is(eventfdRead(fd), 1n);
  d.close();
  const big = device({ len: 1n, wildcard: false, datamatch: 0x101n });
  t.is(big.d.dev.write(0x1000n, 1, 0x01n), EOPNOTSUPP, 'a datamatch wider than the access never matches');
  big.d.close();
});

test('device: reads are never handled', (t) => {
  const { fd, d } = device({ len: 0n });
  t.is(d.dev.read(0x1000n, 4, { value: 0n }), EOPNOTSUPP);
  t.is(eventfdRead(fd), undefined);
  d.close();
});
