// Checks Memslots in memory: KVM_SET_USER_MEMORY_REGION's validation order and errnos, the
// create / move / flags-only / delete bookkeeping, and where overlap (EEXIST) starts and ends.

import test from 'ava';
import { EEXIST, EINVAL } from '../proto/errno';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_USER_MEM_SLOTS } from '../proto/kvm-uapi';
import { Backing, MemoryRegionArg, Memslots } from './memslots';
import { IoctlFailure } from './server';

const MB = 0x100000n;

function backing(key = 1, size = 16 * 0x100000, writable = true): Backing {
  return { key, fd: -1, size, writable, sealed: true, sealable: true };
}

function region(slot: number, gpa: bigint, size: bigint, offset = 0n, flags = 0): MemoryRegionArg {
  return { slot, flags, guestPhysAddr: gpa, memorySize: size, userspaceAddr: offset };
}

/** check() then apply(), as the VM does; returns the change. `null`: no memfd came with the request. */
function set(slots: Memslots, m: MemoryRegionArg, b: Backing | null = backing()): string {
  const { change, backing: used } = slots.check(m, () => b ?? undefined);
  slots.apply(m, change, used);
  return change;
}

/** The failure check() throws for a request (the test fails if it does not throw). */
type Thrower = { throws: (fn: () => unknown, e: { instanceOf: typeof IoctlFailure }) => unknown };

function failure(t: Thrower, slots: Memslots, m: MemoryRegionArg, b: Backing | null = backing()): IoctlFailure {
  return t.throws(() => slots.check(m, () => b ?? undefined), { instanceOf: IoctlFailure }) as IoctlFailure;
}

function layout(slots: Memslots): string[] {
  return slots.slots.map((s) => `${s.id}@0x${s.gpa.toString(16)}+0x${s.size.toString(16)}`);
}

test('a request with bad flags and an unaligned size reports the flags error', (t) => {
  const f = failure(t, new Memslots(), region(0, 0n, 0x1001n, 0n, 1 << 2));
  t.is(f.errno, EINVAL);
  t.regex(f.detail, /flags/);
});

test('the slot id is checked before the flags, as kvm_vm_ioctl_set_memory_region does', (t) => {
  const f = failure(t, new Memslots(), region(KVM_USER_MEM_SLOTS, 0n, 0x1001n, 0n, 1 << 2));
  t.is(f.errno, EINVAL);
  t.regex(f.detail, /slot id/);
});

test('alignment is checked size, then guest_phys_addr, then userspace_addr', (t) => {
  const slots = new Memslots();
  t.regex(failure(t, slots, region(0, 0x800n, 0x1001n, 0x800n)).detail, /memory_size/);
  t.regex(failure(t, slots, region(0, 0x800n, 0x1000n, 0x800n)).detail, /guest_phys_addr/);
  t.regex(failure(t, slots, region(0, 0n, 0x1000n, 0x800n)).detail, /userspace_addr/);
});

test('the memfd is only asked for after the alignment checks, and never for a delete', (t) => {
  const slots = new Memslots();
  let asked = 0;
  const spy = (): Backing => {
    asked++;
    return backing();
  };
  t.throws(() => slots.check(region(0, 0x800n, 0x1000n), spy), { instanceOf: IoctlFailure });
  t.is(asked, 0);
  t.throws(() => slots.check(region(0, 0n, 0n), spy), { instanceOf: IoctlFailure });
  t.is(asked, 0);
  slots.check(region(0, 0n, 0x1000n), spy);
  t.is(asked, 1);
});

test('a missing memfd, or one too small, is EINVAL before the address-space and wrap checks', (t) => {
  const slots = new Memslots();
  const none = failure(t, slots, region(0x10000, 0xfffffffffffff000n, 0x2000n), null);
  t.is(none.errno, EINVAL);
  t.regex(none.detail, /no memfd/);
  const small = failure(t, slots, region(0x10000, 0n, 0x2000n, 0x1000n), backing(1, 0x2000));
  t.regex(small.detail, /exceeds/);
  t.regex(failure(t, slots, region(0x10000, 0n, 0x2000n)).detail, /address space/);
});

test('guest_phys_addr + memory_size may reach 2^64 - 4096 but not wrap to 2^64', (t) => {
  const slots = new Memslots();
  t.is(set(slots, region(0, 0xffffffffffffd000n, 0x2000n)), 'create');
  t.regex(failure(t, slots, region(1, 0xffffffffffffe000n, 0x2000n)).detail, /wraps/);
});

test('create, move, flags-only, no-op and delete are told apart and kept in the slot list', (t) => {
  const slots = new Memslots();
  const b = backing();
  t.is(set(slots, region(3, MB, 0x4000n, 0x2000n), b), 'create');
  const created = slots.get(3)!;
  t.like(created, { id: 3, gpa: MB, size: 0x4000n, offset: 0x2000n, flags: 0 });

  t.is(set(slots, region(3, 2n * MB, 0x4000n, 0x2000n), b), 'move');
  const moved = slots.get(3)!;
  t.is(moved.gpa, 2n * MB);
  t.not(moved.key, created.key, 'a moved slot gets a new key so vCPUs remap it');

  t.is(set(slots, region(3, 2n * MB, 0x4000n, 0x2000n, KVM_MEM_LOG_DIRTY_PAGES), b), 'flags');
  t.is(slots.get(3)!.flags, KVM_MEM_LOG_DIRTY_PAGES);
  t.not(slots.get(3)!.key, moved.key);

  const before = slots.get(3)!.key;
  t.is(slots.check(region(3, 2n * MB, 0x4000n, 0x2000n, KVM_MEM_LOG_DIRTY_PAGES), () => b).change, 'none');
  t.is(slots.apply(region(3, 2n * MB, 0x4000n, 0x2000n, KVM_MEM_LOG_DIRTY_PAGES), 'none', b).old, undefined);
  t.is(slots.get(3)!.key, before);

  t.true(slots.uses(b));
  t.is(set(slots, region(3, 0n, 0n), null), 'delete');
  t.is(slots.get(3), undefined);
  t.deepEqual(layout(slots), []);
  t.false(slots.uses(b));
  t.is(failure(t, slots, region(3, 0n, 0n), null).errno, EINVAL, 'a second delete finds nothing');
});

test('apply() returns the slot it replaced, so the VM can release its memfd, and an undo that restores it', (t) => {
  const slots = new Memslots();
  set(slots, region(0, 0n, 0x1000n));
  set(slots, region(1, 2n * MB, 0x1000n));
  const old = slots.get(0)!;
  const before = layout(slots);
  const m = region(0, MB, 0x1000n);
  const { change, backing: b } = slots.check(m, () => backing());
  const applied = slots.apply(m, change, b);
  t.is(applied.old, old);
  t.is(slots.get(0)!.gpa, MB);
  applied.undo();
  t.is(slots.get(0), old);
  t.deepEqual(layout(slots), before);
});

test('a read-only memfd backs only a KVM_MEM_READONLY slot', (t) => {
  const slots = new Memslots();
  const ro = backing(2, 0x10000, false);
  t.is(failure(t, slots, region(0, 0n, 0x1000n), ro).errno, EINVAL);
  t.is(set(slots, region(0, 0n, 0x1000n, 0n, KVM_MEM_READONLY), ro), 'create');
});

test('only guest_phys_addr and the dirty-log flag of an existing slot may change', (t) => {
  const slots = new Memslots();
  const b = backing(1);
  set(slots, region(0, MB, 0x2000n, 0x1000n), b);
  for (const [what, m, with_] of [
    ['size', region(0, MB, 0x3000n, 0x1000n), b],
    ['offset', region(0, MB, 0x2000n, 0x2000n), b],
    ['memfd', region(0, MB, 0x2000n, 0x1000n), backing(2)],
    ['read-only flag', region(0, MB, 0x2000n, 0x1000n, KVM_MEM_READONLY), b],
  ] as const) {
    const f = failure(t, slots, m, with_);
    t.is(f.errno, EINVAL, what);
    t.regex(f.detail, /only its guest_phys_addr or dirty-log flag/, what);
  }
  t.deepEqual(layout(slots), ['0@0x100000+0x2000'], 'a rejected change leaves the slot as it was');
});

test('slots are kept sorted by guest_phys_addr whatever order they arrive in', (t) => {
  const slots = new Memslots();
  set(slots, region(0, 5n * MB, 0x1000n));
  set(slots, region(1, 1n * MB, 0x1000n));
  set(slots, region(2, 3n * MB, 0x1000n));
  set(slots, region(1, 7n * MB, 0x1000n));
  t.deepEqual(layout(slots), ['2@0x300000+0x1000', '0@0x500000+0x1000', '1@0x700000+0x1000']);
});

test('adjacent slots are fine; sharing a single page with another slot is EEXIST', (t) => {
  const slots = new Memslots();
  set(slots, region(0, 0x10000n, 0x10000n));
  set(slots, region(1, 0x30000n, 0x10000n));
  const cases: [string, bigint, bigint, number][] = [
    ['adjacent below slot 0', 0x0n, 0x10000n, 0],
    ['adjacent above slot 0, below slot 1 (fills the gap exactly)', 0x20000n, 0x10000n, 0],
    ['adjacent above slot 1', 0x40000n, 0x1000n, 0],
    ['last page below slot 0 plus its first page', 0xf000n, 0x2000n, EEXIST],
    ['last page of slot 0', 0x1f000n, 0x1000n, EEXIST],
    ['inside slot 0', 0x14000n, 0x1000n, EEXIST],
    ['covering slot 0 and more', 0x8000n, 0x20000n, EEXIST],
    ['exactly slot 1', 0x30000n, 0x10000n, EEXIST],
    ['from the gap into slot 1', 0x2f000n, 0x2000n, EEXIST],
    ['covering both', 0x0n, 0x100000n, EEXIST],
  ];
  for (const [what, gpa, size, errno] of cases) {
    const fresh = new Memslots();
    set(fresh, region(0, 0x10000n, 0x10000n));
    set(fresh, region(1, 0x30000n, 0x10000n));
    if (errno === 0) t.is(fresh.check(region(2, gpa, size), () => backing()).change, 'create', what);
    else t.is(failure(t, fresh, region(2, gpa, size)).errno, errno, what);
  }
});

test('a move may overlap the slot\'s own old range but not another slot', (t) => {
  const slots = new Memslots();
  set(slots, region(0, 0x10000n, 0x4000n));
  set(slots, region(1, 0x20000n, 0x4000n));
  t.is(set(slots, region(0, 0x12000n, 0x4000n)), 'move');
  t.is(failure(t, slots, region(0, 0x1e000n, 0x4000n)).errno, EEXIST);
  t.is(set(slots, region(0, 0x1c000n, 0x4000n)), 'move', 'ending exactly where slot 1 starts');
  t.deepEqual(layout(slots), ['0@0x1c000+0x4000', '1@0x20000+0x4000']);
  t.is(failure(t, slots, region(1, 0x1f000n, 0x4000n)).errno, EEXIST, 'and from the other side');
});

test('a flags-only change does not look for overlaps', (t) => {
  const slots = new Memslots();
  set(slots, region(0, 0x10000n, 0x4000n));
  t.is(set(slots, region(0, 0x10000n, 0x4000n, 0n, KVM_MEM_LOG_DIRTY_PAGES)), 'flags');
});
