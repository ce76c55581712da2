// qemu_virtio_blk_test: QEMU's virtio-blk-pci behind the qemu-remote bridge, driven by a small legacy
// virtio driver in guest code (lib/virtio.ts): reset, feature negotiation, one split virtqueue,
// DRIVER_OK; then sector writes (a multi-descriptor chain), reads, a flush and a read past the end
// of the disk. Every completion comes back as an interrupt through KVM_IRQFD with RESAMPLE: the
// guest's handler reads ISR (which lowers the line) and returns (the EOI, which the resamplefd passes
// to the remote). One request's handler skips the ISR read once, and the remote, finding its line
// still high at the EOI, interrupts again: the resample path end to end. The VMM checks the image
// file afterwards. Skips when qemu-system-x86_64 (with the x-remote machine) is missing.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { KVM_CAP_IOREGIONFD } from '../../proto/kvm-uapi';
import { FIXTURE, TEST_STEPS, test_harness_run, TH_LOG } from '../kselftest_harness';
import { ExitStatus } from './lib/device_task';
import { GUEST_ASSERT, GUEST_ASSERT_EQ, GUEST_DONE, GUEST_SYNC_ARGS, guest_ram, hlt, set_interrupt_handler, sti } from './lib/guest';
import { vm_create_irqchip } from './lib/irq';
import { vm_ioregion_stats } from './lib/ioregionfd';
import { KvmVcpu, KvmVm, kvm_has_cap, kvm_vm_free, vcpu_args_set, vcpu_run, vm_alloc, vm_create, vm_vcpu_add } from './lib/kvm_util';
import { process_gone, QemuDevice, spawn_qemu_device, TEST_REQUIRE_QEMU } from './lib/qemu_device';
import { get_ucall, REPORT_GUEST_ASSERT, UCALL_ABORT, UCALL_DONE, UCALL_SYNC, Ucall } from './lib/ucall_common';
import { TEST_ASSERT } from './lib/test_util';
import {
  SplitVirtqueue, virtio_blk_header, VirtioLegacyPci, VIRTIO_BLK_CONFIG_CAPACITY, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_REQ_HDR_SIZE,
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_SECTOR_SIZE, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_PCI_ISR_QUEUE,
} from './lib/virtio';

/** The legacy register block: virtio-blk-pci's BAR0, 128 I/O ports. */
const PORT = 0xc000;
const PORT_SIZE = 0x80n;
const GSI = 11;
const IMAGE_SECTORS = 2048;
/** The sectors the guest writes, and the read that spans them and their neighbours. */
const WRITE_SECTOR = 10;
const WRITE_COUNT = 2;
const READ_SECTOR = WRITE_SECTOR - 1;
const READ_COUNT = WRITE_COUNT + 2;

/** What the image holds before the guest touches it: each sector is its number, as u32s. */
function originalSector(n: number): Buffer {
  const b = Buffer.alloc(VIRTIO_BLK_SECTOR_SIZE);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(n, i);
  return b;
}

/** What the guest writes: a pattern that differs per byte and per sector. */
export function written_byte(sector: number, i: number): number {
  return (sector * 31 + i * 7 + 3) & 0xff;
}

/**
 * The driver. `area` holds the ring (first 16 KiB, page aligned), then the header at +0x4000, the
 * status byte at +0x4010 and the data buffer at +0x5000.
 */
export function blk_guest(port: bigint, area: bigint, gsi: bigint): void {
  const dev = new VirtioLegacyPci(Number(port));
  const hdr = area + 0x4000n;
  const status = area + 0x4010n;
  const data = area + 0x5000n;
  let irqs = 0;
  let isrSeen = 0;
  let skipIsr = 0;
  set_interrupt_handler(Number(gsi), () => {
    irqs++;
    // Leaving ISR unread keeps the device's line high: after this EOI the resample re-raises it.
    if (skipIsr > 0) {
      skipIsr--;
      return;
    }
    isrSeen |= dev.isr();
  });
  sti();

  // Initialization (virtio 1.x §3.1.1, legacy: no FEATURES_OK).
  dev.reset();
  const afterReset = dev.status();
  dev.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  dev.addStatus(VIRTIO_CONFIG_S_DRIVER);
  const host = dev.hostFeatures();
  GUEST_ASSERT(host & VIRTIO_BLK_F_FLUSH, `the device offers VIRTIO_BLK_F_FLUSH (host features 0x${host.toString(16)})`);
  dev.setGuestFeatures(VIRTIO_BLK_F_FLUSH);
  const vq: SplitVirtqueue = dev.setupQueue(0, area);
  dev.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
  GUEST_SYNC_ARGS(1, afterReset, dev.status(), host, vq.num, dev.config64(VIRTIO_BLK_CONFIG_CAPACITY));

  /** One request, start to interrupt to used ring: [status byte, used len, interrupts it took]. */
  const request = (type: number, sector: number, dataLens: number[]): [number, number, number] => {
    virtio_blk_header(hdr, type, BigInt(sector));
    guest_ram(status, 1)[0] = 0xff;
    let at = data;
    const bufs = [{ gpa: hdr, len: VIRTIO_BLK_REQ_HDR_SIZE, write: false }];
    for (const len of dataLens) {
      bufs.push({ gpa: at, len, write: type === VIRTIO_BLK_T_IN });
      at += BigInt(len);
    }
    bufs.push({ gpa: status, len: 1, write: true });
    const before = irqs;
    isrSeen = 0;
    const head = vq.add(bufs);
    dev.notify(0);
    while (!(isrSeen & VIRTIO_PCI_ISR_QUEUE)) hlt();
    const used = vq.used();
    GUEST_ASSERT(used !== undefined && used.id === head, `the used ring returns our chain (head ${head}, got ${used?.id})`);
    GUEST_ASSERT(!vq.hasUsed(), 'exactly one completion');
    return [guest_ram(status, 1)[0], used!.len, irqs - before];
  };

  // Write WRITE_COUNT sectors, one descriptor each: a chain of header, data..., status.
  const out = guest_ram(data, WRITE_COUNT * VIRTIO_BLK_SECTOR_SIZE);
  for (let s = 0; s < WRITE_COUNT; s++) {
    for (let i = 0; i < VIRTIO_BLK_SECTOR_SIZE; i++) out[s * VIRTIO_BLK_SECTOR_SIZE + i] = written_byte(WRITE_SECTOR + s, i);
  }
  GUEST_SYNC_ARGS(2, ...request(VIRTIO_BLK_T_OUT, WRITE_SECTOR, Array(WRITE_COUNT).fill(VIRTIO_BLK_SECTOR_SIZE)));

  // Read them back with a neighbour on each side, into a cleared buffer, in one descriptor.
  const inBuf = guest_ram(data, READ_COUNT * VIRTIO_BLK_SECTOR_SIZE);
  inBuf.fill(0xee);
  const r = request(VIRTIO_BLK_T_IN, READ_SECTOR, [READ_COUNT * VIRTIO_BLK_SECTOR_SIZE]);
  let bad = 0;
  for (let s = 0; s < READ_COUNT; s++) {
    const sector = READ_SECTOR + s;
    const fresh = sector >= WRITE_SECTOR && sector < WRITE_SECTOR + WRITE_COUNT;
    for (let i = 0; i < VIRTIO_BLK_SECTOR_SIZE; i++) {
      const want = fresh ? written_byte(sector, i) : (sector >> (8 * (i % 4))) & 0xff;
      if (inBuf[s * VIRTIO_BLK_SECTOR_SIZE + i] !== want) bad++;
    }
  }
  GUEST_SYNC_ARGS(3, ...r, bad);

  GUEST_SYNC_ARGS(4, ...request(VIRTIO_BLK_T_FLUSH, 0, []));
  GUEST_SYNC_ARGS(5, ...request(VIRTIO_BLK_T_IN, IMAGE_SECTORS, [VIRTIO_BLK_SECTOR_SIZE]));

  // The resample path: the first interrupt of this request leaves ISR unread.
  skipIsr = 1;
  GUEST_SYNC_ARGS(6, ...request(VIRTIO_BLK_T_IN, 0, [VIRTIO_BLK_SECTOR_SIZE]));
  GUEST_ASSERT_EQ(skipIsr, 0, 'the handler skipped its ISR read once');
  GUEST_DONE();
}

function nextUcall(vcpu: KvmVcpu): Ucall {
  vcpu_run(vcpu);
  const uc = get_ucall(vcpu);
  if (uc.cmd === UCALL_ABORT) REPORT_GUEST_ASSERT(uc);
  return uc;
}

function expectSync(vcpu: KvmVcpu, stage: number): bigint[] {
  const uc = nextUcall(vcpu);
  TEST_ASSERT(uc.cmd === UCALL_SYNC && uc.args[1] === BigInt(stage), `expected GUEST_SYNC(${stage}), got ucall ${uc.cmd} stage ${uc.args[1]}`);
  return uc.args.slice(2);
}

interface Rig {
  dir: string;
  image: string;
  vm: KvmVm;
  vcpu: KvmVcpu;
  dev: QemuDevice;
  freed: boolean;
  /** Bytes of the read-back that differ from what was written (step "read"). */
  bad?: bigint;
}

/** blk_guest with QEMU's virtio-blk-pci behind a PIO ioregion, on a fresh image in a temporary directory. */
const rig = FIXTURE('virtio_blk', (): Rig => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qemu-virtio-blk-'));
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.concat(Array.from({ length: IMAGE_SECTORS }, (_, n) => originalSector(n))));
  const vm = vm_create();
  vm_create_irqchip(vm);
  const vcpu = vm_vcpu_add(vm, 0, blk_guest);
  const area = vm_alloc(vm, 0x6000, 4096);
  vcpu_args_set(vcpu, PORT, area, GSI);
  const dev = spawn_qemu_device({
    vm, device: 'virtio-blk-pci', drive: image, intx_gsi: GSI,
    bars: { 0: { gpa: BigInt(PORT), size: PORT_SIZE, pio: true, posted: true } },
  });
  dev.closeChannelFds();
  return { dir, image, vm, vcpu, dev, freed: false };
}, async (s) => {
  if (!s.freed) kvm_vm_free(s.vm);
  await s.dev.stop(10000);
  fs.rmSync(s.dir, { recursive: true, force: true });
});

TEST_STEPS(rig, [
  ['legacy init from guest code: status 0 after reset, 7 (ACK|DRIVER|DRIVER_OK) after, queue 0 of 256, ' +
    `capacity ${IMAGE_SECTORS} sectors`, ({ vcpu }) => {
    const [afterReset, st, host, qsize, capacity] = expectSync(vcpu, 1);
    TH_LOG(`status ${afterReset} then ${st}, queue 0 of ${qsize}, capacity ${capacity}, host features 0x${host.toString(16)}`);
    return afterReset === 0n && st === 7n && qsize === 256n && capacity === BigInt(IMAGE_SECTORS);
  }],
  [`write of ${WRITE_COUNT} sectors as a ${WRITE_COUNT + 2}-descriptor chain: status 0, used len 1, 1 interrupt`, ({ vcpu }) => {
    const [wStatus, wLen, wIrqs] = expectSync(vcpu, 2);
    TH_LOG(`status ${wStatus}, used len ${wLen}, ${wIrqs} interrupts`);
    return wStatus === BigInt(VIRTIO_BLK_S_OK) && wLen === 1n && wIrqs === 1n;
  }],
  [`read of ${READ_COUNT} sectors: status 0, used len ${READ_COUNT * VIRTIO_BLK_SECTOR_SIZE + 1} (data + status byte), 1 interrupt`, (s) => {
    const [rStatus, rLen, rIrqs, bad] = expectSync(s.vcpu, 3);
    s.bad = bad;
    TH_LOG(`status ${rStatus}, used len ${rLen}, ${rIrqs} interrupts`);
    return rStatus === BigInt(VIRTIO_BLK_S_OK) && rLen === BigInt(READ_COUNT * VIRTIO_BLK_SECTOR_SIZE + 1) && rIrqs === 1n;
  }],
  ['the read returns the written sectors and their untouched neighbours', ({ bad }) => {
    TH_LOG(`${bad} bytes differ`);
    return bad === 0n;
  }],
  ['flush: status 0, 1 interrupt', ({ vcpu }) => {
    const [fStatus, fLen, fIrqs] = expectSync(vcpu, 4);
    TH_LOG(`status ${fStatus}, ${fIrqs} interrupts`);
    return fStatus === BigInt(VIRTIO_BLK_S_OK) && fLen === 1n && fIrqs === 1n;
  }],
  [`a read at sector ${IMAGE_SECTORS} (past the end) completes with VIRTIO_BLK_S_IOERR`, ({ vcpu }) => {
    const [eStatus, , eIrqs] = expectSync(vcpu, 5);
    TH_LOG(`status ${eStatus}`);
    return eStatus === BigInt(VIRTIO_BLK_S_IOERR) && eIrqs === 1n;
  }],
  ['resample: a handler that leaves ISR unread gets the interrupt again after its EOI, then reads ISR and it stops', ({ vcpu }) => {
    const [sStatus, , sIrqs] = expectSync(vcpu, 6);
    TH_LOG(`${sIrqs} interrupts`);
    return sStatus === BigInt(VIRTIO_BLK_S_OK) && sIrqs === 2n;
  }],
  ['every register access went through the PIO ioregion', ({ vm, vcpu }) => {
    TEST_ASSERT(nextUcall(vcpu).cmd === UCALL_DONE, 'the guest finishes');
    const s = vm_ioregion_stats(vm)[0];
    TH_LOG(`${s.reads} reads, ${s.postedWrites} posted writes, ${s.failures} failures`);
    return s.pio && s.postedWrites > 0n && s.writes === 0n && s.failures === 0n;
  }],
  ['freeing the VM ends the device task and its remote', async (s) => {
    const qpid = s.dev.remote_pid();
    TEST_ASSERT(qpid !== undefined, 'the device task has a qemu-system child');
    kvm_vm_free(s.vm);
    s.freed = true;
    const status: ExitStatus = await s.dev.stop(10000);
    TH_LOG(`exit ${status.code ?? status.signal}`);
    return status.code === 0 && process_gone(qpid);
  }],
  [`the image file holds the guest's ${WRITE_COUNT} sectors at ${WRITE_SECTOR} and nothing else changed`, ({ image }) => {
    const disk = fs.readFileSync(image);
    const sector = (n: number) => disk.subarray(n * VIRTIO_BLK_SECTOR_SIZE, (n + 1) * VIRTIO_BLK_SECTOR_SIZE);
    let diffs = 0;
    for (let n = 0; n < IMAGE_SECTORS; n++) {
      const fresh = n >= WRITE_SECTOR && n < WRITE_SECTOR + WRITE_COUNT;
      const want = fresh ? Buffer.from(Array.from({ length: VIRTIO_BLK_SECTOR_SIZE }, (_, i) => written_byte(n, i))) : originalSector(n);
      if (!sector(n).equals(want)) diffs++;
    }
    TH_LOG(`${diffs} sectors differ`);
    return disk.length === IMAGE_SECTORS * VIRTIO_BLK_SECTOR_SIZE && diffs === 0;
  }],
]);

if (require.main === module) {
  TEST_REQUIRE_QEMU();
  TEST_ASSERT(kvm_has_cap(KVM_CAP_IOREGIONFD), 'KVM_CAP_IOREGIONFD');
  void test_harness_run();
}
