// ioregionfd_wire_test: the 32-byte wire protocol byte for byte (docs/ioregionfd.md §4, §5.1, §5.7;
// must-test items 14-28). The test plays the device on the raw fds, so it sees every command and
// chooses every answer, including wrong ones.

import { KVM_CAP_EMU_IOREGIONFD_WIRE, KVM_CAP_IOREGIONFD, KVM_EXIT_MMIO, KVM_IOREGION_PIO, KVM_IOREGION_POSTED_WRITES } from '../../proto/kvm-uapi';
import { closeQuietly, pipe, socketpair } from '../../proto/os';
import { EXPECT, EXPECT_EQ, FIXTURE, TEST, TEST_F, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import {
  GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, ins, outs, readb, readl, readq, readw, write_bytes, writeb, writel, writeq, writew,
} from './lib/guest';
import { vm_set_ioregion } from './lib/ioregionfd';
import {
  addr_gpa2hva, exit_reason, kvm_has_cap, kvm_vm_free, KvmVcpu, KvmVm, le_value, run_mmio, vcpu_args_set, vm_alloc,
  vm_create_with_one_vcpu, vm_enable_cap, GuestCode,
} from './lib/kvm_util';
import { Answer, RawCommand, runServing } from './lib/raw_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC, Ucall } from './lib/ucall_common';
import { TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

const R = 0xd0000000n;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').replace(/(.{16})/g, '$1 ').trim();
const RESP_1122 = (() => {
  // 0x1122334455667788 with 24 bytes of 0xff padding: the padding must be ignored.
  const b = new Uint8Array(32).fill(0xff);
  new DataView(b.buffer).setBigUint64(0, 0x1122334455667788n, true);
  return b;
})();

export function guest_sizes(): void {
  writeb(R + 0x10n, 0x7fn);
  writew(R + 0x12n, 0xbeefn);
  writel(R + 0x14n, 0x11223344n);
  writeq(R + 0x18n, 0x8877665544332211n);
  GUEST_SYNC_ARGS(1, readb(R + 1n), readw(R + 2n), readl(R + 4n), readq(R + 8n));
  GUEST_DONE();
}

export function guest_posted(): void {
  writel(R, 1n);
  writel(R + 4n, 2n);
  writeq(R + 8n, 3n);
  GUEST_DONE();
}

export function guest_v1(): void {
  writel(R + 0x10n, 0x11223344n);
  readw(R + 6n);
  GUEST_DONE();
}

export function guest_fast_mmio(): void {
  writel(R, 0xdeadbeefn);
  GUEST_SYNC(1);
  writel(R + 1n, 1n);
  GUEST_SYNC(2);
  readl(R);
  GUEST_DONE();
}

/** Mid-page, so that straddling accesses are not first split at a page boundary (x86 would). */
const M = R + 0x800n;

export function guest_matching(): void {
  readl(M + 12n);
  GUEST_SYNC(1);
  readl(M + 13n);
  GUEST_SYNC(2);
  readl(M - 2n);
  GUEST_SYNC(3);
  write_bytes(M, Uint8Array.from({ length: 16 }, (_, i) => i));
  GUEST_SYNC(4);
  write_bytes(M + 4n, Uint8Array.of(0xa, 0xb, 0xc));
  GUEST_DONE();
}

export function guest_string_pio(buf: bigint): void {
  outs(0x3000, 2, buf, 3);
  ins(0x3000, 2, buf + 8n, 2);
  GUEST_DONE();
}

export function guest_spurious(): void {
  writel(R, 1n);
  const first = readl(R + 8n);
  const second = readl(R + 8n);
  GUEST_SYNC_ARGS(1, first, second);
  GUEST_DONE();
}

export function guest_transport(): void {
  writeq(R, 0x0102030405060708n);
  GUEST_ASSERT_EQ(readq(R + 8n), 0x1122334455667788n, 'read over this transport');
  GUEST_DONE();
}

interface Setup {
  vm: KvmVm;
  vcpu: KvmVcpu;
  cmdFd: number;
  respFd: number;
  close(): void;
}

/** A VM running `guest`, with one region on a socketpair whose device end the test holds. */
function setup(guest: GuestCode, region: { paddr?: bigint; size: bigint; flags?: number; userData?: bigint }, transport: 'seqpacket' | 'stream' | 'pipe' = 'seqpacket'): Setup {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest);
  let kvmRead: number, kvmWrite: number, cmdFd: number, respFd: number;
  const fds: number[] = [];
  if (transport === 'pipe') {
    const [cr, cw] = pipe();
    const [rr, rw] = pipe();
    [kvmRead, kvmWrite, cmdFd, respFd] = [rr, cw, cr, rw];
    fds.push(cr, cw, rr, rw);
  } else {
    const [a, b] = socketpair(transport);
    [kvmRead, kvmWrite, cmdFd, respFd] = [a, a, b, b];
    fds.push(a, b);
  }
  vm_set_ioregion(vm, {
    guest_paddr: region.paddr ?? R, memory_size: region.size, user_data: region.userData ?? 0n, read_fd: kvmRead, write_fd: kvmWrite, flags: region.flags ?? 0,
  });
  return { vm, vcpu, cmdFd, respFd, close: () => { kvm_vm_free(vm); fds.forEach(closeQuietly); } };
}

function ucallOf(s: Setup): Ucall {
  const uc = get_ucall(s.vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc;
}

const answerReads = (value: Answer) => (c: RawCommand): Answer => (c.cmd.resp ? (c.cmd.cmd === 0 ? value : 0n) : undefined);

/** Runs a scenario once per test: its setup, what the test observed, and its release. */
function scenario<T extends { s: { close(): void } }>(name: string, run: () => T) {
  return FIXTURE(name, run, (o) => o.s.close());
}

/** guest_sizes: 1/2/4/8-byte writes then reads, answered with RESP_1122. */
const sizes = scenario('sizes', () => {
  const s = setup(guest_sizes, { size: 0x100n, userData: 0xabcdn });
  const { run, commands } = runServing(s.vcpu, [s], answerReads(RESP_1122));
  const uc = ucallOf(s);
  TEST_ASSERT(run.ret === 0 && uc.cmd === UCALL_SYNC, 'guest_sizes did not report its reads');
  const reads = uc.args.slice(2, 6);
  runServing(s.vcpu, [s], answerReads(RESP_1122));
  TEST_ASSERT(ucallOf(s).cmd === UCALL_DONE, 'guest_sizes did not finish');
  return { s, commands, reads };
});

TEST_F(sizes, 'eight accesses, eight 32-byte commands', ({ commands }) => {
  EXPECT(commands.length === 8 && commands.every((c) => c.bytes.length === 32), `8 commands of 32 bytes, got ${commands.map((c) => c.bytes.length)}`);
});
TEST_F(sizes, 'v3 padding bytes 2..7 are zero in every command', ({ commands }) => {
  EXPECT(commands.every((c) => c.bytes.subarray(2, 8).every((x) => x === 0)), 'zero padding');
});
TEST_F(sizes, '4-byte WRITE of 0x11223344 at offset 0x14, user_data 0xABCD is the spec\'s image', ({ commands }) => {
  EXPECT_EQ(hex(commands[2].bytes), '0112000000000000 cdab000000000000 1400000000000000 4433221100000000', 'the command bytes');
});
TEST_F(sizes, 'cmd, size, region-relative offset, user_data and zero-extended write data of every command; resp set on reads and non-posted writes', ({ commands }) => {
  const want = [[1, 1, 0x10n, 0x7fn], [1, 2, 0x12n, 0xbeefn], [1, 4, 0x14n, 0x11223344n], [1, 8, 0x18n, 0x8877665544332211n],
    [0, 1, 1n, 0n], [0, 2, 2n, 0n], [0, 4, 4n, 0n], [0, 8, 8n, 0n]] as const;
  const matches = (c: (typeof commands)[number], i: number) =>
    c.cmd.cmd === want[i][0] && c.cmd.size === want[i][1] && c.cmd.offset === want[i][2] && c.cmd.data === want[i][3] &&
    c.cmd.userData === 0xabcdn && c.cmd.resp;
  EXPECT(commands.every(matches), 'every command as the guest made it');
});
TEST_F(sizes, 'v3 byte 1: size_exponent 0/1/2/3 for 1/2/4/8 bytes with resp in bit 4', ({ commands }) => {
  EXPECT(commands.slice(0, 4).every((c, i) => c.bytes[1] === ([0, 1, 2, 3][i] | 0x10)), 'byte 1 of the four writes');
});
TEST_F(sizes, 'reads of 1/2/4/8 bytes complete with the low len bytes of resp.data; its 0xff padding is ignored', ({ reads }) => {
  TH_LOG(reads.map((v) => `0x${v.toString(16)}`).join(', '));
  EXPECT(reads.join(',') === [0x88n, 0x7788n, 0x55667788n, 0x1122334455667788n].join(','), '0x88, 0x7788, 0x55667788, 0x1122334455667788');
});

TEST('posted writes carry resp=0 and the vCPU goes on without any response', () => {
  const s = setup(guest_posted, { size: 0x10n, flags: KVM_IOREGION_POSTED_WRITES });
  try {
    // The device never answers: a posted write must not wait.
    const { run, commands } = runServing(s.vcpu, [s], () => undefined);
    EXPECT(run.ret === 0 && ucallOf(s).cmd === UCALL_DONE, 'the guest to finish');
    EXPECT(commands.length === 3 && commands.every((c) => !c.cmd.resp && (c.bytes[1] & 0x10) === 0), 'three commands with resp 0');
  } finally {
    s.close();
  }
});

/** guest_v1 on a VM that speaks the v1/v2 info-word layout. */
const v1Layout = scenario('v1_layout', () => {
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_v1);
  vm_enable_cap(vm, KVM_CAP_EMU_IOREGIONFD_WIRE, 1n);
  const [a, b] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 0x100n, user_data: 0xabcdn, read_fd: a, write_fd: a });
  const { commands } = runServing(vcpu, [{ cmdFd: b, respFd: b, layout: 'v1' }], answerReads(0n));
  TEST_ASSERT(get_ucall(vcpu).cmd === UCALL_DONE, 'guest_v1 did not finish');
  return { s: { close: () => { kvm_vm_free(vm); [a, b].forEach(closeQuietly); } }, commands };
});

TEST_F(v1Layout, 'v1/v2 info-word layout: 4-byte WRITE image starts 61 00 00 00', ({ commands }) => {
  EXPECT_EQ(hex(commands[0].bytes), '6100000000000000 cdab000000000000 1000000000000000 4433221100000000', 'the command bytes');
});
TEST_F(v1Layout, 'v1/v2: 2-byte READ at offset 6 has byte 0 = 0x50', ({ commands }) => {
  EXPECT_EQ(commands[1].bytes[0], 0x50, 'byte 0');
  EXPECT_EQ(commands[1].cmd.offset, 6n, 'offset');
});

const fastMmio = FIXTURE('fast_mmio', () => setup(guest_fast_mmio, { size: 0n, flags: KVM_IOREGION_POSTED_WRITES, userData: 0x55n }), (s) => s.close());

TEST_STEPS(fastMmio, [
  ['a 4-byte write of 0xdeadbeef to a size-0 region: cmd WRITE, size code 0, resp 0, offset 0, data 0', (s) => {
    const r = runServing(s.vcpu, [s], () => undefined);
    TEST_ASSERT(ucallOf(s).cmd === UCALL_SYNC, 'fast mmio stage 1');
    TH_LOG(r.commands.map((c) => hex(c.bytes)).join('; '));
    return r.commands.length === 1 && hex(r.commands[0].bytes) === '0100000000000000 5500000000000000 0000000000000000 0000000000000000';
  }],
  ['a size-0 region matches only its exact address: a write at +1 exits KVM_EXIT_MMIO', (s) => {
    const r = runServing(s.vcpu, [s], () => undefined);
    const m = run_mmio(s.vcpu);
    return r.commands.length === 0 && exit_reason(s.vcpu) === KVM_EXIT_MMIO && m.physAddr === R + 1n && m.isWrite;
  }],
  ['a read of a size-0 (write-only) region exits KVM_EXIT_MMIO and sends nothing', (s) => {
    runServing(s.vcpu, [s], () => undefined);
    TEST_ASSERT(ucallOf(s).cmd === UCALL_SYNC, 'fast mmio stage 2');
    const r = runServing(s.vcpu, [s], () => undefined);
    return r.commands.length === 0 && exit_reason(s.vcpu) === KVM_EXIT_MMIO && !run_mmio(s.vcpu).isWrite;
  }],
]);

/** Run to the next exit, which must be an ordinary KVM_EXIT_MMIO with these fields and no command sent. */
function exitsAt(s: Setup, addr: bigint, len: number, isWrite: boolean): boolean {
  const r = runServing(s.vcpu, [s], answerReads(0n));
  const m = run_mmio(s.vcpu);
  TH_LOG(`${r.commands.length} commands, exit ${exit_reason(s.vcpu)} 0x${m.physAddr.toString(16)}/${m.len}`);
  return r.commands.length === 0 && exit_reason(s.vcpu) === KVM_EXIT_MMIO && m.physAddr === addr && m.len === len && m.isWrite === isWrite;
}

const matching = FIXTURE('matching', () => setup(guest_matching, { paddr: M, size: 16n, userData: 7n }), (s) => s.close());

TEST_STEPS(matching, [
  ['a 4-byte read at base+size-4 is dispatched', (s) => {
    const r = runServing(s.vcpu, [s], answerReads(0n));
    return r.commands.length === 1 && r.commands[0].cmd.offset === 12n && ucallOf(s).cmd === UCALL_SYNC;
  }],
  [`a 4-byte read at base+size-3 straddles the end: KVM_EXIT_MMIO at 0x${(M + 13n).toString(16)} len 4`, (s) => exitsAt(s, M + 13n, 4, false)],
  [`a 4-byte read at base-2 straddles the start: KVM_EXIT_MMIO at 0x${(M - 2n).toString(16)} len 4`, (s) => {
    runServing(s.vcpu, [s], answerReads(0n));
    TEST_ASSERT(ucallOf(s).cmd === UCALL_SYNC, 'matching stage 2');
    return exitsAt(s, M - 2n, 4, false);
  }],
  ['a 16-byte access becomes two 8-byte commands in address order', (s) => {
    runServing(s.vcpu, [s], answerReads(0n));
    TEST_ASSERT(ucallOf(s).cmd === UCALL_SYNC, 'matching stage 3');
    const r = runServing(s.vcpu, [s], answerReads(0n));
    return r.commands.length === 2 && r.commands[0].cmd.offset === 0n && r.commands[1].cmd.offset === 8n &&
      r.commands[0].cmd.data === 0x0706050403020100n && r.commands[1].cmd.data === 0x0f0e0d0c0b0a0908n && ucallOf(s).cmd === UCALL_SYNC;
  }],
  [`a 3-byte access is not a valid ioregionfd length: KVM_EXIT_MMIO at 0x${(M + 4n).toString(16)} len 3`, (s) => exitsAt(s, M + 4n, 3, true)],
  ['the 3-byte exit carries the guest bytes', (s) => {
    const ok = le_value(run_mmio(s.vcpu).data, 3) === 0x0c0b0an;
    runServing(s.vcpu, [s], answerReads(0n));
    TEST_ASSERT(ucallOf(s).cmd === UCALL_DONE, 'matching done');
    return ok;
  }],
]);

/** rep outsw of 3 elements, then rep insw of 2, on a 4-port PIO region. */
const stringPio = scenario('string_pio', () => {
  const s = setup(guest_string_pio, { paddr: 0x3000n, size: 4n, flags: KVM_IOREGION_PIO });
  const buf = vm_alloc(s.vm, 16);
  addr_gpa2hva(s.vm, buf, 6).set([0x11, 0x22, 0x33, 0x44, 0x55, 0x66]);
  vcpu_args_set(s.vcpu, buf);
  let n = 0;
  const { commands } = runServing(s.vcpu, [s], (c) => (c.cmd.resp ? (c.cmd.cmd === 0 ? [0xaaaan, 0xbbbbn][n++] : 0n) : undefined));
  TEST_ASSERT(ucallOf(s).cmd === UCALL_DONE, 'string pio done');
  return { s, commands, buf };
});

TEST_F(stringPio, 'rep outsw of 3 elements: three 2-byte commands at the same offset, in order', ({ commands }) => {
  const outsOk = commands.slice(0, 3).every((c, i) =>
    c.cmd.cmd === 1 && c.cmd.size === 2 && c.cmd.offset === 0n && c.cmd.data === [0x2211n, 0x4433n, 0x6655n][i]);
  EXPECT(commands.length === 5 && outsOk, 'three OUT commands (then the two INs)');
});
TEST_F(stringPio, 'rep insw of 2 elements: two reads land in guest memory in order', ({ s, buf }) => {
  EXPECT_EQ(le_value(addr_gpa2hva(s.vm, buf + 8n, 4), 4), 0xbbbbaaaan, 'the guest buffer');
});

TEST('a spurious reply to a posted write desynchronises the next reads', () => {
  // Two regions on one socket: a posted one at R, a normal one at R+8. The device wrongly answers
  // the posted write; with no ids in the protocol that answer is taken for the next read's.
  const [vm, vcpu] = vm_create_with_one_vcpu(guest_spurious);
  const [a, b] = socketpair('seqpacket');
  vm_set_ioregion(vm, { guest_paddr: R, memory_size: 8n, read_fd: a, write_fd: a, flags: KVM_IOREGION_POSTED_WRITES });
  vm_set_ioregion(vm, { guest_paddr: R + 8n, memory_size: 8n, read_fd: a, write_fd: a });
  let reads = 0;
  runServing(vcpu, [{ cmdFd: b, respFd: b }], (c) => (c.cmd.resp ? [0x6262n, 0x7373n][reads++] : 0x5151n));
  const uc = get_ucall(vcpu);
  kvm_vm_free(vm);
  [a, b].forEach(closeQuietly);
  TH_LOG(`got 0x${uc.args[2]?.toString(16)}, 0x${uc.args[3]?.toString(16)}`);
  EXPECT(uc.cmd === UCALL_SYNC && uc.args[2] === 0x5151n && uc.args[3] === 0x6262n, 'the stray 0x5151, then the first read\'s 0x6262');
});

for (const t of ['stream', 'pipe'] as const) {
  TEST(`${t === 'stream' ? 'SOCK_STREAM socketpair' : 'two pipes (read_fd != write_fd)'}: commands arrive whole and a read completes`, () => {
    const s = setup(guest_transport, { size: 16n }, t);
    try {
      const { commands } = runServing(s.vcpu, [s], answerReads(0x1122334455667788n));
      EXPECT(ucallOf(s).cmd === UCALL_DONE && commands.length === 2 && commands[0].cmd.data === 0x0102030405060708n, 'two whole commands and the guest done');
    } finally {
      s.close();
    }
  });
}

if (require.main === module) {
  TEST_REQUIRE(kvm_has_cap(KVM_CAP_IOREGIONFD), 'kvm_has_cap(KVM_CAP_IOREGIONFD)');
  void test_harness_run();
}
