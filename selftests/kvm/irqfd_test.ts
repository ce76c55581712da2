// irqfd_test: KVM_CREATE_IRQCHIP, KVM_IRQ_LINE and KVM_IRQFD. The ABI errnos (measured on a real
// /dev/kvm, x86, Linux 6.18, and matching mainline irqfd_test.c: EBUSY for an eventfd already backing
// an irqfd of any VM, deassign of an unknown pair succeeds); delivery to the guest's handlers,
// including hlt() wake-ups, interrupts held while disabled, deassign, resample (the resamplefd fires
// at the guest's EOI, i.e. when its handler returns) and edge-triggered lines; and the full loop
// with a device task in its own process: the guest rings an ioeventfd doorbell, the device DMAs its
// answer into guest memory and raises an irqfd, the guest's handler sees the answer. No VMM involved.

import { IoctlResult } from '../../proto/control';
import { EBADF, EBUSY, EEXIST, EINTR, EINVAL, ENXIO } from '../../proto/errno';
import {
  KVM_CAP_IRQCHIP, KVM_CAP_IRQFD, KVM_CAP_IRQFD_RESAMPLE, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR,
  KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE,
} from '../../proto/kvm-uapi';
import { close, closeQuietly, EFD_NONBLOCK, eventfd, eventfdWrite, getStatusFlags, O_NONBLOCK, pipe } from '../../proto/os';
import { EXPECT, EXPECT_ERRNO, FIXTURE, Step, TEST, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { spawn_device_task } from './lib/device_task';
import {
  cli, cpu_relax, GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC, GUEST_SYNC_ARGS, hlt, readq, set_interrupt_handler, sti,
  writel, writeq,
} from './lib/guest';
import {
  __vm_ioeventfd, eventfd_take, eventfd_wait_consumed, eventfds_of, eventfds_settled, fd_readable, open_counted_kernel_model,
  vm_ioeventfd,
} from './lib/ioeventfd';
import {
  __kvm_irqfd, __vm_create_irqchip, _kvm_irq_line, kvm_assign_irqfd, kvm_assign_irqfd_resample, kvm_deassign_irqfd,
  kvm_irq_line, vm_create_irqchip,
} from './lib/irq';
import {
  __vcpu_run, __vcpu_run_start, __vcpu_run_wait, close_kvm_dev, exit_reason, exit_reason_str, KvmVcpu, KvmVm, kvm_check_cap, kvm_vm_free,
  vcpu_args_set, vcpu_kick, vcpu_run, vm_alloc, vm_create, vm_create_barebones, vm_vcpu_add,
} from './lib/kvm_util';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC, Ucall } from './lib/ucall_common';
import { msleep, TEST_ASSERT, TEST_REQUIRE } from './lib/test_util';

export const GSI_IRQFD = 5;
export const GSI_RESAMPLE = 6;
export const GSI_LINE = 7;
export const GSI_MASKED = 9;
export const GSI_DOORBELL = 10;
export const GSI_NO_HANDLER = 3;
export const DOORBELL = 0xd000_1000n;
const DOORBELL_ROUNDS = 3;

/** The delivery guest; the host drives each stage (see deliveryCases). */
export function irq_guest(): void {
  const counts = new Array<number>(24).fill(0);
  const count = (v: number) => {
    counts[v]++;
  };
  set_interrupt_handler(GSI_IRQFD, count);
  set_interrupt_handler(GSI_LINE, count);
  set_interrupt_handler(GSI_MASKED, count);
  // The resample handler reports to the host from inside the handler, i.e. before its EOI.
  set_interrupt_handler(GSI_RESAMPLE, (v) => {
    counts[v]++;
    GUEST_SYNC_ARGS(60, counts[v]);
  });
  sti();
  while (counts[GSI_IRQFD] === 0) hlt();
  GUEST_SYNC_ARGS(1, counts[GSI_IRQFD]);
  while (counts[GSI_LINE] === 0) hlt();
  GUEST_SYNC_ARGS(2, counts[GSI_LINE]);
  while (counts[GSI_LINE] === 1) hlt();
  GUEST_SYNC_ARGS(3, counts[GSI_IRQFD]);
  cli();
  GUEST_SYNC(4);
  for (let i = 0; i < 100; i++) cpu_relax();
  const whileDisabled = counts[GSI_MASKED];
  sti();
  GUEST_SYNC_ARGS(5, whileDisabled, counts[GSI_MASKED]);
  while (counts[GSI_RESAMPLE] === 0) hlt();
  GUEST_SYNC_ARGS(6, counts[GSI_RESAMPLE]);
  while (counts[GSI_RESAMPLE] === 1) hlt();
  GUEST_SYNC_ARGS(7, counts[GSI_RESAMPLE]);
  set_interrupt_handler(GSI_LINE, (v) => {
    counts[v]++;
    GUEST_SYNC_ARGS(70, counts[v]);
  });
  const before = counts[GSI_LINE];
  GUEST_SYNC(8);
  while (counts[GSI_LINE] < before + 1) hlt();
  // Give a (wrong) re-delivery of the still-asserted line every chance: many instruction boundaries.
  for (let i = 0; i < 100; i++) cpu_relax();
  GUEST_SYNC_ARGS(9, counts[GSI_LINE] - before);
  while (counts[GSI_LINE] < before + 2) hlt();
  GUEST_SYNC_ARGS(10, counts[GSI_LINE] - before);
  GUEST_DONE();
}

/** No handler for a raised vector with interrupts enabled: a guest bug. */
export function no_handler_guest(): void {
  sti();
  hlt();
  GUEST_DONE();
}

/** hlt() without an irqchip exits to the VMM. */
export function hlt_guest(): void {
  hlt();
  GUEST_DONE();
}

/** Ring the doorbell device (ioeventfd), sleep in hlt(), and check its DMA from the interrupt handler. */
export function doorbell_guest(mailbox: bigint): void {
  let irqs = 0;
  let seen = 0n;
  set_interrupt_handler(GSI_DOORBELL, () => {
    irqs++;
    seen = readq(mailbox + 8n);
  });
  sti();
  for (let round = 1; round <= DOORBELL_ROUNDS; round++) {
    writeq(mailbox, BigInt(round * 100));
    writel(DOORBELL, 1n);
    while (irqs < round) hlt();
    GUEST_ASSERT_EQ(seen, BigInt(round * 100 + 1), 'request + 1 as seen by the interrupt handler');
    GUEST_ASSERT_EQ(readq(mailbox + 16n), BigInt(round), 'rings counted by the device');
  }
  GUEST_SYNC_ARGS(1, irqs);
  GUEST_DONE();
}

/** r is the expected outcome (errno 0 = success: ret 0); prints what came instead. */
function expect(r: IoctlResult, errno: number): boolean {
  return EXPECT_ERRNO(r, errno) && (errno !== 0 || r.ret === 0);
}

const newEventfd = () => eventfd(0, EFD_NONBLOCK);
const DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN;
const RESAMPLE = KVM_IRQFD_FLAG_RESAMPLE;

// ---- the ABI --------------------------------------------------------------------------------------

interface AbiVms {
  /** No irqchip. */
  bare: KvmVm;
  /** Gets its irqchip in the steps. */
  vm: KvmVm;
  other: KvmVm;
  /** Has a vCPU, so it can get no irqchip. */
  withVcpu: KvmVm;
  pr: number;
  pw: number;
  e1: number;
  e2: number;
  shared: number;
  freed: number;
}

const abiVms = FIXTURE('abi', (): AbiVms => {
  const withVcpu = vm_create();
  vm_vcpu_add(withVcpu, 0);
  const [pr, pw] = pipe();
  return {
    bare: vm_create_barebones(), vm: vm_create_barebones(), other: vm_create_barebones(), withVcpu, pr, pw,
    e1: newEventfd(), e2: newEventfd(), shared: newEventfd(), freed: -1,
  };
}, (s) => {
  [s.bare, s.vm, s.other, s.withVcpu].forEach(kvm_vm_free);
  [s.pr, s.pw, s.e1, s.e2, s.shared, s.freed].forEach(closeQuietly);
});

function abiSteps(): Step<AbiVms>[] {
  return [
    ['KVM_CAP_IRQCHIP, KVM_CAP_IRQFD and KVM_CAP_IRQFD_RESAMPLE are 1',
      () => kvm_check_cap(KVM_CAP_IRQCHIP) === 1 && kvm_check_cap(KVM_CAP_IRQFD) === 1 && kvm_check_cap(KVM_CAP_IRQFD_RESAMPLE) === 1],
    ['KVM_IRQFD without an irqchip is EINVAL', (s) => expect(__kvm_irqfd(s.bare, 5, s.e1, 0), EINVAL)],
    ['KVM_IRQFD without an irqchip is EINVAL even with a bad fd (checked first)', (s) => expect(__kvm_irqfd(s.bare, 5, -1, 0), EINVAL)],
    ['KVM_IRQFD with RESAMPLE without an irqchip is EINVAL', (s) => expect(__kvm_irqfd(s.bare, 5, s.e1, RESAMPLE, s.e2), EINVAL)],
    ['KVM_IRQFD deassign needs no irqchip (and succeeds)', (s) => expect(__kvm_irqfd(s.bare, 5, s.e1, DEASSIGN), 0)],
    ['KVM_IRQ_LINE without an irqchip is ENXIO', (s) => expect(_kvm_irq_line(s.bare, 5, 1), ENXIO)],
    ['KVM_CREATE_IRQCHIP succeeds on a VM without vCPUs', (s) => expect(__vm_create_irqchip(s.vm), 0)],
    ['KVM_CREATE_IRQCHIP twice is EEXIST', (s) => expect(__vm_create_irqchip(s.vm), EEXIST)],
    ['KVM_CREATE_IRQCHIP after a vCPU exists is EINVAL', (s) => expect(__vm_create_irqchip(s.withVcpu), EINVAL)],
    ['KVM_IRQ_LINE with an irqchip succeeds (assert and deassert GSI 5)', (s) => expect(_kvm_irq_line(s.vm, 5, 1), 0) && expect(_kvm_irq_line(s.vm, 5, 0), 0)],
    ['KVM_IRQ_LINE to GSIs without a route (24, 0xffffffff) succeeds and does nothing',
      (s) => expect(_kvm_irq_line(s.vm, 24, 1), 0) && expect(_kvm_irq_line(s.vm, 0xffffffff, 1), 0)],
    ['KVM_IRQFD with unknown flags (0x4) is EINVAL', (s) => expect(__kvm_irqfd(s.vm, 5, s.e1, 0x4), EINVAL)],
    ['KVM_IRQFD deassign with unknown flags is EINVAL (flags are checked first)', (s) => expect(__kvm_irqfd(s.vm, 5, s.e1, DEASSIGN | 0x4), EINVAL)],
    ['KVM_IRQFD with fd -1 is EBADF', (s) => expect(__kvm_irqfd(s.vm, 5, -1, 0), EBADF)],
    ['KVM_IRQFD with a closed fd is EBADF', (s) => {
      const closed = newEventfd();
      close(closed);
      return expect(__kvm_irqfd(s.vm, 5, closed, 0), EBADF);
    }],
    ['KVM_IRQFD with a pipe (not an eventfd) is EINVAL', (s) => expect(__kvm_irqfd(s.vm, 5, s.pr, 0), EINVAL)],
    ['KVM_IRQFD with RESAMPLE and resamplefd -1 is EBADF', (s) => expect(__kvm_irqfd(s.vm, 6, s.e1, RESAMPLE, -1), EBADF)],
    ['KVM_IRQFD with RESAMPLE and a pipe as resamplefd is EINVAL', (s) => expect(__kvm_irqfd(s.vm, 6, s.e1, RESAMPLE, s.pr), EINVAL)],
    ['KVM_IRQFD assigns an eventfd to GSI 5', (s) => expect(__kvm_irqfd(s.vm, 5, s.e1, 0), 0)],
    ['KVM_IRQFD leaves the caller\'s eventfd flags alone (O_NONBLOCK not added)', (s) => {
      const blocking = eventfd(0, 0);
      const ok = expect(__kvm_irqfd(s.vm, 11, blocking, 0), 0) && (getStatusFlags(blocking) & O_NONBLOCK) === 0;
      kvm_deassign_irqfd(s.vm, 11, blocking);
      close(blocking);
      return ok;
    }],
    ['the same eventfd on the same GSI again is EBUSY', (s) => expect(__kvm_irqfd(s.vm, 5, s.e1, 0), EBUSY)],
    ['the same eventfd on another GSI is EBUSY', (s) => expect(__kvm_irqfd(s.vm, 6, s.e1, 0), EBUSY)],
    ['the same eventfd in another VM is EBUSY', (s) => {
      vm_create_irqchip(s.other);
      return expect(__kvm_irqfd(s.other, 5, s.e1, 0), EBUSY);
    }],
    ['a busy eventfd with RESAMPLE and a bad resamplefd is EBADF (the resamplefd is checked before EBUSY)',
      (s) => expect(__kvm_irqfd(s.vm, 6, s.e1, RESAMPLE, -1), EBADF)],
    ['an irqfd\'s eventfd may also back an ioeventfd', (s) => expect(__vm_ioeventfd(s.vm, { addr: 0xd000_0000n, len: 4, fd: s.e1 }), 0)],
    ['GSIs without a route are accepted for irqfds (GSI 1024)', (s) => expect(__kvm_irqfd(s.vm, 1024, s.e2, 0), 0) && expect(__kvm_irqfd(s.vm, 1024, s.e2, DEASSIGN), 0)],
    ['one eventfd may be both the irqfd and its resamplefd', (s) => expect(__kvm_irqfd(s.vm, 12, s.shared, RESAMPLE, s.shared), 0)],
    ['deassign of a never-assigned (eventfd, GSI) succeeds', (s) => expect(__kvm_irqfd(s.vm, 13, s.e2, DEASSIGN), 0)],
    ['deassign of an assigned eventfd with another GSI succeeds (and removes nothing)',
      (s) => expect(__kvm_irqfd(s.vm, 6, s.e1, DEASSIGN), 0) && expect(__kvm_irqfd(s.vm, 6, s.e1, 0), EBUSY)],
    ['deassign with fd -1 is EBADF', (s) => expect(__kvm_irqfd(s.vm, 5, -1, DEASSIGN), EBADF)],
    ['deassign with a pipe is EINVAL', (s) => expect(__kvm_irqfd(s.vm, 5, s.pr, DEASSIGN), EINVAL)],
    ['deassign ignores RESAMPLE and the resamplefd', (s) => expect(__kvm_irqfd(s.vm, 12, s.shared, DEASSIGN | RESAMPLE, -1), 0)],
    ['after deassign the eventfd can be assigned again', (s) => expect(__kvm_irqfd(s.vm, 5, s.e1, DEASSIGN), 0) && expect(__kvm_irqfd(s.vm, 5, s.e1, 0), 0)],
    ['closing a VM frees its irqfds\' eventfds for another VM', (s) => {
      s.freed = newEventfd();
      const doomed = vm_create_barebones();
      vm_create_irqchip(doomed);
      kvm_assign_irqfd(doomed, 5, s.freed);
      kvm_vm_free(doomed);
      // VM destruction is asynchronous in the kernel-model (as kvm_vm_release's work is in KVM).
      let r = __kvm_irqfd(s.other, 5, s.freed, 0);
      for (let waited = 0; r.ret !== 0 && r.errno === EBUSY && waited < 2000; waited += 5) {
        msleep(5);
        r = __kvm_irqfd(s.other, 5, s.freed, 0);
      }
      return expect(r, 0);
    }],
    ['closing a VM releases every irqfd and resamplefd reference the kernel-model took', () => {
      const { kvm, pid, before } = open_counted_kernel_model();
      const counted = vm_create_barebones(kvm);
      vm_create_irqchip(counted);
      const mine = Array.from({ length: 8 }, newEventfd);
      for (let i = 0; i < 4; i++) kvm_assign_irqfd(counted, i, mine[i]);
      for (let i = 4; i < 8; i += 2) kvm_assign_irqfd_resample(counted, i, mine[i], mine[i + 1]);
      const held = eventfds_of(pid);
      kvm_vm_free(counted);
      const after = eventfds_settled(pid, before);
      close_kvm_dev(kvm);
      mine.forEach(closeQuietly);
      TH_LOG(`kernel-model eventfds: ${before} before, ${held} with 4 irqfds and 2 resampling ones, ${after} after close`);
      return held === before + 8 && after === before;
    }],
  ];
}

TEST_STEPS(abiVms, abiSteps());

// ---- delivery ------------------------------------------------------------------------------------

function nextUcall(vcpu: KvmVcpu): Ucall {
  vcpu_run(vcpu);
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc;
}

/** Run to GUEST_SYNC(stage) and return its extra arguments. */
function expectSync(vcpu: KvmVcpu, stage: number): bigint[] {
  const uc = nextUcall(vcpu);
  TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(stage),
    `expected GUEST_SYNC(${stage}), got exit ${exit_reason_str(exit_reason(vcpu))} ucall ${uc.cmd} stage ${uc.args[1]}`);
  return uc.args.slice(2);
}

interface IrqVm {
  vm: KvmVm;
  vcpu: KvmVcpu;
  efd: number;
  masked: number;
  resample: number;
  resamplefd: number;
}

/** irq_guest with an irqchip, an irqfd, a masked one and a resampling one. */
const irqVm = FIXTURE('delivery', (): IrqVm => {
  const vm = vm_create();
  vm_create_irqchip(vm);
  const s = { vm, vcpu: vm_vcpu_add(vm, 0, irq_guest), efd: newEventfd(), masked: newEventfd(), resample: newEventfd(), resamplefd: newEventfd() };
  kvm_assign_irqfd(vm, GSI_IRQFD, s.efd);
  kvm_assign_irqfd(vm, GSI_MASKED, s.masked);
  kvm_assign_irqfd_resample(vm, GSI_RESAMPLE, s.resample, s.resamplefd);
  return s;
}, (s) => {
  kvm_vm_free(s.vm);
  [s.efd, s.masked, s.resample, s.resamplefd].forEach(closeQuietly);
});

/** An irqfd write, once the kernel-model has taken it. */
function signal(fd: number): void {
  eventfdWrite(fd);
  TEST_ASSERT(eventfd_wait_consumed(fd), 'the kernel-model did not consume an irqfd write within 2 s');
}

function deliverySteps(): Step<IrqVm>[] {
  return [
    ['a kick while the guest sleeps in hlt() returns EINTR with KVM_EXIT_INTR', (s) => {
      __vcpu_run_start(s.vcpu);
      msleep(50);
      vcpu_kick(s.vcpu);
      const r = __vcpu_run_wait(s.vcpu);
      return r.ret === -1 && r.errno === EINTR && exit_reason(s.vcpu) === KVM_EXIT_INTR;
    }],
    ['an irqfd write wakes hlt() and runs the guest\'s handler for that GSI, once', (s) => {
      eventfdWrite(s.efd);
      const [n] = expectSync(s.vcpu, 1);
      return n === 1n;
    }],
    ['the kernel-model consumed the irqfd\'s counter', (s) => !fd_readable(s.efd)],
    ['KVM_IRQ_LINE 1 then 0 (a pulse) delivers the GSI once', (s) => {
      kvm_irq_line(s.vm, GSI_LINE, 1);
      kvm_irq_line(s.vm, GSI_LINE, 0);
      const [n] = expectSync(s.vcpu, 2);
      return n === 1n;
    }],
    ['after KVM_IRQFD deassign, writes to the eventfd raise nothing', (s) => {
      kvm_deassign_irqfd(s.vm, GSI_IRQFD, s.efd);
      eventfdWrite(s.efd);
      msleep(20);
      kvm_irq_line(s.vm, GSI_LINE, 1);
      kvm_irq_line(s.vm, GSI_LINE, 0);
      const [n] = expectSync(s.vcpu, 3);
      return n === 1n;
    }],
    ['after deassign nobody consumes the eventfd (its counter is still 1)', (s) => eventfd_take(s.efd) === 1n],
    ['an interrupt raised while interrupts are disabled waits, and is taken at sti', (s) => {
      expectSync(s.vcpu, 4);
      signal(s.masked);
      const [whileDisabled, afterSti] = expectSync(s.vcpu, 5);
      return whileDisabled === 0n && afterSti === 1n;
    }],
    ['resample: the resamplefd is not signalled while the handler runs (before EOI)', (s) => {
      eventfdWrite(s.resample);
      const [n] = expectSync(s.vcpu, 60);
      return n === 1n && !fd_readable(s.resamplefd);
    }],
    ['resample: a second irqfd write while the line is asserted is coalesced; the handler\'s return (EOI) signals the resamplefd', (s) => {
      signal(s.resample);
      const [n] = expectSync(s.vcpu, 6);
      return n === 1n && fd_readable(s.resamplefd, 2000) && eventfd_take(s.resamplefd) === 1n;
    }],
    ['resample: after the EOI the line is low, so the next irqfd write interrupts again and is resampled again', (s) => {
      eventfdWrite(s.resample);
      const [inHandler] = expectSync(s.vcpu, 60);
      const [n] = expectSync(s.vcpu, 7);
      return inHandler === 2n && n === 2n && fd_readable(s.resamplefd, 2000) && eventfd_take(s.resamplefd) === 1n;
    }],
    ['edge-triggered: a line held asserted by KVM_IRQ_LINE fires once, through the EOI', (s) => {
      expectSync(s.vcpu, 8);
      kvm_irq_line(s.vm, GSI_LINE, 1);
      const [inHandler] = expectSync(s.vcpu, 70);
      const [total] = expectSync(s.vcpu, 9);
      return inHandler === 3n && total === 1n;
    }],
    ['edge-triggered: lowering and raising the line again fires again', (s) => {
      kvm_irq_line(s.vm, GSI_LINE, 0);
      kvm_irq_line(s.vm, GSI_LINE, 1);
      const [inHandler] = expectSync(s.vcpu, 70);
      const [total] = expectSync(s.vcpu, 10);
      kvm_irq_line(s.vm, GSI_LINE, 0);
      return inHandler === 4n && total === 2n;
    }],
    ['the guest finishes (GUEST_DONE)', (s) => nextUcall(s.vcpu).cmd === UCALL_DONE],
  ];
}

TEST_STEPS(irqVm, deliverySteps());

TEST('without an irqchip hlt() exits with KVM_EXIT_HLT', () => {
  const vm = vm_create();
  const vcpu = vm_vcpu_add(vm, 0, hlt_guest);
  vcpu_run(vcpu);
  const ok = exit_reason(vcpu) === KVM_EXIT_HLT && nextUcall(vcpu).cmd === UCALL_DONE;
  kvm_vm_free(vm);
  EXPECT(ok, 'KVM_EXIT_HLT, then GUEST_DONE');
});

TEST('an interrupt with no handler installed, taken with interrupts enabled, stops the vCPU (KVM_EXIT_INTERNAL_ERROR)', () => {
  const vm = vm_create();
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, no_handler_guest);
  kvm_irq_line(vm, GSI_NO_HANDLER, 1);
  const r = __vcpu_run(vcpu);
  const ok = r.ret === 0 && exit_reason(vcpu) === KVM_EXIT_INTERNAL_ERROR && /vector 3/.test(r.detail);
  if (!ok) TH_LOG(`got ret ${r.ret} exit ${exit_reason_str(exit_reason(vcpu))}: ${r.detail}`);
  kvm_vm_free(vm);
  EXPECT(ok, 'KVM_EXIT_INTERNAL_ERROR naming vector 3');
});

// ---- doorbell -> DMA -> interrupt with a device task ------------------------------------------------

TEST(`doorbell device task: ${DOORBELL_ROUNDS} rounds of ioeventfd ring, DMA into guest RAM and irqfd interrupt, no exit to the VMM`, async () => {
  const vm = vm_create();
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, doorbell_guest);
  const mailbox = vm_alloc(vm, 24);
  vcpu_args_set(vcpu, mailbox);
  const ring = newEventfd();
  const irq = newEventfd();
  vm_ioeventfd(vm, { addr: DOORBELL, len: 4, fd: ring });
  kvm_assign_irqfd(vm, GSI_DOORBELL, irq);
  const task = spawn_device_task({
    device: 'doorbell', channels: [], memory: vm, eventfds: { doorbell: ring, irq },
    config: { mailbox: `0x${mailbox.toString(16)}` },
  });
  const [irqs] = expectSync(vcpu, 1);
  const done = nextUcall(vcpu).cmd === UCALL_DONE;
  kvm_vm_free(vm);
  const status = await task.stop();
  [ring, irq].forEach(closeQuietly);
  EXPECT(irqs === BigInt(DOORBELL_ROUNDS), `${DOORBELL_ROUNDS} interrupts (got ${irqs})`);
  EXPECT(done, 'the guest to finish');
  EXPECT(status.code === 0, `the device task to exit 0 (got ${status.code ?? status.signal})`);
});

if (require.main === module) {
  TEST_REQUIRE(kvm_check_cap(KVM_CAP_IRQFD) > 0, 'kvm_has_cap(KVM_CAP_IRQFD)');
  void test_harness_run();
}
