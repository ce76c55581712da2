// KVM's user-space ABI as this model speaks it: ioctl numbers, capabilities, exit reasons and the
// byte layouts of the structs that travel in ioctls and in the shared kvm_run page (x86-64, little-endian).
//
// Numbers the kernel fixed keep their kernel values. Numbers the ioregionfd RFC never fixed, and the
// emulator's own ioctls, live in documented private ranges (see EMU_* below and the README).

/** _IOC(dir, type, nr, size) as in include/uapi/asm-generic/ioctl.h. */
export function IOC(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const KVMIO = 0xae;
const IO = (nr: number) => IOC(0, KVMIO, nr, 0);
const IOW = (nr: number, size: number) => IOC(1, KVMIO, nr, size);
const IOR = (nr: number, size: number) => IOC(2, KVMIO, nr, size);

/** _IOC_DIR / _IOC_SIZE of an ioctl number. */
export const ioctlDir = (req: number) => (req >>> 30) & 3;
export const ioctlSize = (req: number) => (req >>> 16) & 0x3fff;
export const IOC_WRITE = 1;
export const IOC_READ = 2;

export const KVM_API_VERSION = 12;

// System ioctls (on the fd from opening "/dev/kvm").
export const KVM_GET_API_VERSION = IO(0x00);
export const KVM_CREATE_VM = IO(0x01);
export const KVM_CHECK_EXTENSION = IO(0x03);
export const KVM_GET_VCPU_MMAP_SIZE = IO(0x04);

// VM ioctls.
export const KVM_CREATE_VCPU = IO(0x41);
export const KVM_SET_USER_MEMORY_REGION = IOW(0x46, 32);
export const KVM_CREATE_IRQCHIP = IO(0x60);
export const KVM_IRQ_LINE = IOW(0x61, 8);
export const KVM_IRQFD = IOW(0x76, 32);
export const KVM_IOEVENTFD = IOW(0x79, 64);
export const KVM_ENABLE_CAP = IOW(0xa3, 104);
/** The ioregionfd RFC's VM ioctl, _IOW(KVMIO, 0x49, struct kvm_ioregion) = 0x4040AE49 (configurable per model). */
export const KVM_SET_IOREGION = IOW(0x49, 64);
/** The same ioctl under the 2020 proposal's name. */
export const KVM_SET_IOREGIONFD = KVM_SET_IOREGION;

// vCPU ioctls.
export const KVM_RUN = IO(0x80);
export const KVM_GET_REGS = IOR(0x81, 144);
export const KVM_SET_REGS = IOW(0x82, 144);

// Emulator-private ioctls: type KVMIO, nr 0xE0-0xEF (unused by mainline KVM as of 6.18). Their
// argument is a protobuf message from proto/kvm.proto, not a C struct.
/** vCPU: set the guest entry point (a compiled JS module and an export name). Arg: GuestEntry. */
export const KVM_EMU_SET_GUEST_ENTRY = IO(0xe0);
/** VM: read per-ioregion statistics. Reply: IoregionStatsList. */
export const KVM_EMU_GET_IOREGION_STATS = IO(0xe1);
/**
 * vCPU: run this vCPU's thread on these CPUs only (a VMM pins its own vCPU threads; the model's live
 * in the kernel-model). Arg: a cpu_set_t-style bit mask, little-endian bytes, at most 128 bytes.
 */
export const KVM_EMU_SET_VCPU_AFFINITY = IO(0xe2);
/**
 * System: how many VMs, vCPUs and vCPU threads the kernel-model holds, so a test can check that a
 * destroyed VM left nothing behind. Reply: ObjectCounts. (The last number of the range: not a feature.)
 */
export const KVM_EMU_GET_OBJECT_COUNTS = IO(0xef);

// Capabilities (KVM_CHECK_EXTENSION).
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_IRQFD_RESAMPLE = 82;
export const KVM_CAP_ENABLE_CAP_VM = 98;
export const KVM_CAP_IOEVENTFD_NO_LENGTH = 100;
export const KVM_CAP_CHECK_EXTENSION_VM = 105;
export const KVM_CAP_IOEVENTFD_ANY_LENGTH = 122;
export const KVM_CAP_MAX_VCPU_ID = 128;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
/** The RFC's number (v1-v3); other trees used 195 and 206, so the model lets a user change it. */
export const KVM_CAP_IOREGIONFD = 191;
/** Emulator-private capabilities: 0x1000 and up (mainline ends near 250). */
export const KVM_CAP_EMU_BASE = 0x1000;
/** VM, KVM_ENABLE_CAP: args[0] = 3 (RFC v3 layout, default) or 1 (the v1/v2 info-word layout). */
export const KVM_CAP_EMU_IOREGIONFD_WIRE = KVM_CAP_EMU_BASE + 1;
/** VM, KVM_ENABLE_CAP: args[0] = 1 turns ioregionfd failures into KVM_EXIT_IOREGIONFD_FAILURE exits. */
export const KVM_CAP_EMU_IOREGIONFD_FAILURE_EXIT = KVM_CAP_EMU_BASE + 2;

// Exit reasons (kvm_run.exit_reason).
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
/** Emulator-private exit reasons: 0x1000 and up. The failure exit the RFC listed as TODO. */
export const KVM_EXIT_EMU_BASE = 0x1000;
export const KVM_EXIT_IOREGIONFD_FAILURE = KVM_EXIT_EMU_BASE + 1;

export const KVM_INTERNAL_ERROR_EMULATION = 1;

const EXIT_NAMES: Record<number, string> = {
  [KVM_EXIT_UNKNOWN]: 'UNKNOWN', [KVM_EXIT_EXCEPTION]: 'EXCEPTION', [KVM_EXIT_IO]: 'IO',
  [KVM_EXIT_HYPERCALL]: 'HYPERCALL', [KVM_EXIT_DEBUG]: 'DEBUG', [KVM_EXIT_HLT]: 'HLT', [KVM_EXIT_MMIO]: 'MMIO',
  [KVM_EXIT_IRQ_WINDOW_OPEN]: 'IRQ_WINDOW_OPEN', [KVM_EXIT_SHUTDOWN]: 'SHUTDOWN', [KVM_EXIT_FAIL_ENTRY]: 'FAIL_ENTRY',
  [KVM_EXIT_INTR]: 'INTR', [KVM_EXIT_INTERNAL_ERROR]: 'INTERNAL_ERROR', [KVM_EXIT_SYSTEM_EVENT]: 'SYSTEM_EVENT',
  [KVM_EXIT_IOREGIONFD_FAILURE]: 'IOREGIONFD_FAILURE',
};

/** exit_reason_str(): the KVM_EXIT_* name without its prefix. */
export function exitReasonName(reason: number): string {
  return EXIT_NAMES[reason] ?? 'Unknown';
}

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// Model limits, chosen like x86 KVM's.
export const PAGE_SIZE = 4096;
export const KVM_MAX_VCPUS = 1024;
/** x86: KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO (4). */
export const KVM_MAX_VCPU_IDS = 4096;
/** x86 KVM_USER_MEM_SLOTS (KVM_MEM_SLOTS_NUM 32767 minus 3 private slots). */
export const KVM_USER_MEM_SLOTS = 32764;
export const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;
export const NR_IOBUS_DEVS = 1000;
/** x86: page 0 kvm_run, page 1 PIO data, page 2 coalesced MMIO ring. */
export const KVM_VCPU_MMAP_SIZE = 3 * PAGE_SIZE;
export const KVM_PIO_PAGE_OFFSET = 1;

// struct kvm_userspace_memory_region (32 bytes). In this model userspace_addr is the offset into the
// memfd that travels beside the ioctl (SCM_RIGHTS), since processes do not share address spaces.
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
export const MEMREGION = { slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24, SIZE: 32 };

// struct kvm_ioeventfd (64 bytes).
export const IOEVENTFD = { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24, SIZE: 64 };
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;
export const KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY = 1 << 3;
export const KVM_IOEVENTFD_VALID_FLAG_MASK = (1 << 5) - 1;

// struct kvm_ioregion (64 bytes, RFC v3 names).
export const IOREGION = { guest_paddr: 0, memory_size: 8, user_data: 16, read_fd: 24, write_fd: 28, flags: 32, SIZE: 64 };
export const KVM_IOREGION_PIO = 1 << 0;
export const KVM_IOREGION_POSTED_WRITES = 1 << 1;
export const KVM_IOREGION_DEASSIGN = 1 << 2;
export const KVM_IOREGION_VALID_FLAG_MASK = 0x7;

// struct kvm_irqfd (32 bytes).
export const IRQFD = { fd: 0, gsi: 4, flags: 8, resamplefd: 12, SIZE: 32 };
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;

// struct kvm_irq_level (8 bytes).
export const IRQ_LEVEL = { irq: 0, level: 4, SIZE: 8 };

// struct kvm_enable_cap (104 bytes).
export const ENABLE_CAP = { cap: 0, flags: 4, args: 8, SIZE: 104 };

// struct kvm_regs (144 bytes): 18 u64 in this order.
export const REGS = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const;
export type RegName = (typeof REGS)[number];
export const REGS_SIZE = 144;

// struct kvm_run offsets (the fields this model fills).
export const RUN = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  /** The exit union starts here. */
  exit: 32,
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  /** KVM_EXIT_IOREGIONFD_FAILURE (emulator-defined): see README "Failure exit". */
  iofail_addr: 32,
  iofail_data: 40,
  iofail_len: 48,
  iofail_is_write: 52,
  iofail_is_pio: 53,
  iofail_user_data: 56,
  iofail_errno: 64,
  /**
   * Emulator-private words in page 0 past the end of struct kvm_run (2352 bytes): the kick
   * ("signal pending") flag the VMM sets before writing the vCPU's kick eventfd.
   */
  emu_kick: 3072,
} as const;

/**
 * The VMM's kick request: bit 0 of the Int32 at RUN.emu_kick. The VMM sets it (Atomics.or) and then
 * writes the vCPU's kick eventfd; that is this model's "signal the vCPU thread". The kernel-model
 * reads and clears only this bit; whatever else a VMM writes there means nothing.
 */
export const EMU_ATTN_KICK = 1 << 0;
