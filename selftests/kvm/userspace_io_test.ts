// userspace_io_test: port I/O that no in-kernel device takes exits KVM_EXIT_IO with the right
// direction, size, port, count and data_offset; an IN completes on the next KVM_RUN with exactly the
// bytes the VMM put at data_offset; string I/O (rep ins / rep outs) fills and drains guest memory.
//
// The string batches are x86 KVM's, measured on a real /dev/kvm: `rep ins` exits with up to 1024
// bytes per exit (the emulator's read-ahead cache), further limited by the bytes left in the
// destination page, which pio_in_emulated compares with an element count, so a batch of words or
// dwords can run past the page; `rep outs` exits once per element. KVM zeroes the data of an IN exit
// before the VMM fills it. (The kernel's test also rewrites RCX during the exit; in this model the
// guest's string count is not a register, so that part has no equivalent.)

import { KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, PAGE_SIZE } from '../../proto/kvm-uapi';
import { PortSize } from '../../proto/guest-cpu';
import { FIXTURE, Step, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, inb, inl, ins, inw, outb, outl, outs, outw } from './lib/guest';
import {
  addr_gpa2hva, exit_reason, KvmVcpu, KvmVm, kvm_vm_free, le_store, le_value, run_io, vcpu_args_set, vcpu_run, vm_alloc,
  vm_create_with_one_vcpu,
} from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, Ucall, UCALL_ABORT, UCALL_DONE, UCALL_SYNC } from './lib/ucall_common';
import { TEST_ASSERT, TEST_ASSERT_EQ } from './lib/test_util';

const PORT = 0x80;
const PIO_DATA_OFFSET = PAGE_SIZE;
const SENTINEL = 0x55;

interface StringCase {
  size: PortSize;
  /** Byte offset of the guest buffer from a page boundary. */
  offset: number;
  count: number;
  /** Elements per exit, as measured on x86 KVM. */
  exits: number[];
}

const INS_CASES: StringCase[] = [
  { size: 1, offset: 0, count: 2, exits: [2] },
  { size: 1, offset: 0, count: 3, exits: [3] },
  { size: 1, offset: 0, count: 8192, exits: Array(8).fill(1024) },
  { size: 1, offset: 0xe00, count: 2048, exits: [512, 1024, 512] },
  { size: 2, offset: 0xf00, count: 1024, exits: [256, 512, 256] },
  { size: 4, offset: 0xff0, count: 300, exits: [16, 256, 28] },
];

const OUTS_CASES: StringCase[] = [
  { size: 1, offset: 0, count: 2, exits: [1, 1] },
  { size: 1, offset: 0, count: 3, exits: [1, 1, 1] },
  { size: 1, offset: 0, count: 8192, exits: Array(8192).fill(1) },
  { size: 2, offset: 0x7fe, count: 3, exits: [1, 1, 1] },
];

export function guest_code(buf: bigint): void {
  outb(PORT, 0x12);
  outw(PORT, 0x3456);
  outl(PORT, 0x789abcde);
  GUEST_ASSERT_EQ(inb(PORT), 0xa1, 'inb');
  GUEST_ASSERT_EQ(inw(PORT), 0xb2c3, 'inw');
  GUEST_ASSERT_EQ(inl(PORT), 0xd4e5f607, 'inl');
  outl(PORT, 0xffffffff);
  GUEST_ASSERT_EQ(inl(PORT), 0, 'an IN the VMM did not fill');
  GUEST_SYNC(1);
  for (const c of INS_CASES) {
    ins(PORT, c.size, buf + BigInt(c.offset), c.count);
    GUEST_SYNC_ARGS(2, c.count);
  }
  for (const c of OUTS_CASES) {
    outs(PORT, c.size, buf + BigInt(c.offset), c.count);
    GUEST_SYNC_ARGS(3, c.count);
  }
  GUEST_DONE();
}

/** The byte the VMM supplies (or the guest holds) at byte index i of a transfer. */
function pattern(i: number): number {
  return (i * 7 + 1) & 0xff;
}

/** Run until the next exit; a ucall ABORT (a failed GUEST_ASSERT) fails the test. */
function next_exit(vcpu: KvmVcpu): void {
  vcpu_run(vcpu);
  TEST_ASSERT(exit_reason(vcpu) === KVM_EXIT_IO, `unexpected exit reason ${exit_reason(vcpu)}`);
}

/** The ucall at the current exit (which must be one), failing the test on a guest assertion. */
function ucall_here(vcpu: KvmVcpu): Ucall {
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc;
}

function io_fields(vcpu: KvmVcpu): string {
  const io = run_io(vcpu);
  return `${io.direction === KVM_EXIT_IO_IN ? 'IN' : 'OUT'} size ${io.size} port 0x${io.port.toString(16)} count ${io.count} data_offset ${io.dataOffset}`;
}

function expect_pio(vcpu: KvmVcpu, direction: number, size: number, count: number): boolean {
  const io = run_io(vcpu);
  return exit_reason(vcpu) === KVM_EXIT_IO && io.direction === direction && io.size === size && io.port === PORT &&
    io.count === count && io.dataOffset === PIO_DATA_OFFSET;
}

/** [1024, 1024, 512] -> "1024 x2, 512". */
function summary(counts: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < counts.length;) {
    let j = i;
    while (j < counts.length && counts[j] === counts[i]) j++;
    parts.push(j - i > 1 ? `${counts[i]} x${j - i}` : `${counts[i]}`);
    i = j;
  }
  return parts.join(', ') || 'none';
}

interface Rig {
  vm: KvmVm;
  vcpu: KvmVcpu;
  /** The guest's buffer for string I/O. */
  buf: bigint;
}

const rig = FIXTURE('guest', (): Rig => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_code);
  const buf = vm_alloc(vm, 3 * 8192, PAGE_SIZE);
  vcpu_args_set(vcpu, buf);
  return { vm, vcpu, buf };
}, (s) => kvm_vm_free(s.vm));

const steps: Step<Rig>[] = [];

for (const [size, value] of [[1, 0x12n], [2, 0x3456n], [4, 0x789abcden]] as const) {
  steps.push([`out of ${size} byte(s) exits KVM_EXIT_IO: OUT, size ${size}, port 0x80, count 1, data_offset 4096, data 0x${value.toString(16)}`, ({ vcpu }) => {
    next_exit(vcpu);
    const io = run_io(vcpu);
    TH_LOG(`${io_fields(vcpu)}, data 0x${le_value(io.data, size).toString(16)}`);
    return expect_pio(vcpu, KVM_EXIT_IO_OUT, size, 1) && le_value(io.data, size) === value;
  }]);
}

// From here on each step looks at the current exit and then runs to the next one.
for (const [size, value] of [[1, 0xa1n], [2, 0xb2c3n], [4, 0xd4e5f607n]] as const) {
  steps.push([`in of ${size} byte(s) exits KVM_EXIT_IO: IN, size ${size}, port 0x80, count 1, data_offset 4096, data zeroed; the guest gets exactly the 0x${value.toString(16)} written there`, ({ vcpu }) => {
    if (size === 1) next_exit(vcpu);
    const fields = expect_pio(vcpu, KVM_EXIT_IO_IN, size, 1);
    TH_LOG(io_fields(vcpu));
    const io = run_io(vcpu);
    const zeroed = io.data.every((b) => b === 0);
    le_store(io.data, size, value);
    // The guest checks the value it got (GUEST_ASSERT_EQ); a mismatch is an ABORT at the next exit.
    next_exit(vcpu);
    const guestOk = run_io(vcpu).port === PORT || ucall_here(vcpu).cmd !== UCALL_ABORT;
    return fields && zeroed && guestOk;
  }]);
}

steps.push(['an IN the VMM leaves unfilled reads 0 (KVM zeroes the data), not the previous OUT\'s 0xffffffff', ({ vcpu }) => {
  // The current exit is the OUT of 0xffffffff; the IN after it is left unfilled.
  TEST_ASSERT(expect_pio(vcpu, KVM_EXIT_IO_OUT, 4, 1), 'outl(0xffffffff)');
  next_exit(vcpu);
  const unfilled = expect_pio(vcpu, KVM_EXIT_IO_IN, 4, 1) && run_io(vcpu).data.every((b) => b === 0);
  next_exit(vcpu);
  const uc = ucall_here(vcpu);
  return unfilled && uc.cmd === UCALL_SYNC && uc.args[1] === 1n;
}]);

for (const c of INS_CASES) {
  steps.push([`rep ins${'bwd'[c.size >> 1]} count ${c.count} at page offset 0x${c.offset.toString(16)}: IN exits of ${summary(c.exits)} elements, and guest memory holds exactly the VMM's data, nothing past it`, ({ vcpu, buf }) => {
    const bytes = c.size * c.count;
    const mem = addr_gpa2hva(vcpu.vm, buf + BigInt(c.offset), bytes + 1);
    mem.fill(SENTINEL);
    const exits: number[] = [];
    let done = 0;
    let fieldsOk = true;
    for (;;) {
      next_exit(vcpu);
      const io = run_io(vcpu);
      if (io.port !== PORT) break;
      fieldsOk &&= expect_pio(vcpu, KVM_EXIT_IO_IN, c.size, io.count) && io.data.every((b) => b === 0);
      exits.push(io.count);
      for (let k = 0; k < io.data.length; k++) io.data[k] = pattern(done + k);
      done += io.data.length;
    }
    const uc = ucall_here(vcpu);
    TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === 2n && uc.args[2] === BigInt(c.count), `ins count ${c.count} did not end in its GUEST_SYNC`);
    let memOk = mem[bytes] === SENTINEL;
    for (let i = 0; i < bytes && memOk; i++) memOk = mem[i] === pattern(i);
    TH_LOG(`exits ${summary(exits)}`);
    return fieldsOk && memOk && exits.join() === c.exits.join();
  }]);
}

for (const c of OUTS_CASES) {
  const bytes = c.size * c.count;
  steps.push([`rep outs${'bwd'[c.size >> 1]} count ${c.count}: one OUT exit per element (KVM does not batch OUTS), carrying the guest's ${bytes} bytes in order`, ({ vcpu, buf }) => {
    const mem = addr_gpa2hva(vcpu.vm, buf + BigInt(c.offset), bytes);
    for (let i = 0; i < bytes; i++) mem[i] = pattern(i);
    const exits: number[] = [];
    let done = 0;
    let ok = true;
    for (;;) {
      next_exit(vcpu);
      const io = run_io(vcpu);
      if (io.port !== PORT) break;
      ok &&= expect_pio(vcpu, KVM_EXIT_IO_OUT, c.size, io.count);
      exits.push(io.count);
      for (let k = 0; k < io.data.length; k++) ok &&= io.data[k] === pattern(done + k);
      done += io.data.length;
    }
    const uc = ucall_here(vcpu);
    TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === 3n && uc.args[2] === BigInt(c.count), `outs count ${c.count} did not end in its GUEST_SYNC`);
    TH_LOG(`exits ${summary(exits)}`);
    if (c === OUTS_CASES[OUTS_CASES.length - 1]) {
      vcpu_run(vcpu);
      TEST_ASSERT_EQ(ucall_here(vcpu).cmd, UCALL_DONE, 'the guest ends with GUEST_DONE');
    }
    return ok && done === bytes && exits.join() === c.exits.join();
  }]);
}

TEST_STEPS(rig, steps);

if (require.main === module) void test_harness_run();
