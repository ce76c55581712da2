// qemu-remote: any PCI device model of QEMU as a device task, run by multi-process QEMU in its own
// `qemu-system-x86_64 -machine x-remote` process and reached over that process's socket (MPQemu).
//
// Start-up (all before the first command is served; until then the guest's accesses wait in the
// channel): launch the remote and wait until it runs (remote-process.ts, qmp.ts); size the BARs and
// program the ones the config maps, at their guest addresses, with decoding and bus mastering on
// (pci.ts); hand it the manifest's INTx and resample eventfds (SET_IRQFD), so its interrupts reach
// KVM's irqfd with nobody in between; send it the manifest's guest RAM (SYNC_SYSMEM), so it DMAs
// straight into the guest's memfds. The manifest's memory is fixed for the task's life, so the table
// is sent once. Then each ioregionfd command becomes one BAR_READ or BAR_WRITE (bridge.ts).
//
// Failures: a config or device that does not fit, or a remote that cannot start, ends the task at
// start-up (exit 2, the reason in its log). A remote that dies while serving ends the task (exit 4)
// and one that breaks the protocol too (exit 3): the channels close, so the guest's access takes
// KVM's failure path rather than hanging. Config: config.ts.

import { exitProcessNow } from '../../../proto/os';
import { EXIT_PROTOCOL } from '../../sdk/serve';
import type { DeviceDefinition } from '../../sdk/device-model';
import type { MemorySpec } from '../../../proto/device-task-manifest';
import { QemuBridge } from './bridge';
import { parseQemuRemoteConfig, QemuRemoteConfig } from './config';
import { RemoteFailure, RemoteLink } from './link';
import { MappedBar, planBars, programBars, readIdentity, sizeBars } from './pci';
import { launchRemote } from './remote-process';
import { EXIT_REMOTE_GONE } from './stderr-forwarder';
import { MPQEMU_MAX_FDS } from './wire';

/** The manifest eventfds the remote's INTx drives: the irqfd (KVM_IRQFD) and its resamplefd. */
export const INTX_EVENTFD = 'intx';
export const INTX_RESAMPLE_EVENTFD = 'intx_resample';

/** The fd behind a manifest eventfd, if it is a real one (in memory it is a recorder without an fd). */
function fdOf(e: unknown): number | undefined {
  const fd = (e as { fd?: unknown } | undefined)?.fd;
  return typeof fd === 'number' ? fd : undefined;
}

const hex = (v: bigint | number) => `0x${v.toString(16)}`;

/**
 * Everything between "the remote runs" and "serve": check the device, size and program its BARs,
 * wire its INTx, give it guest RAM. Returns the mapped BARs; throws (RemoteFailure or Error) on
 * anything that does not fit. Works on any RemoteLink (the socket, or an in-memory remote).
 */
export function setUpRemoteDevice(
  link: RemoteLink, cfg: QemuRemoteConfig, ram: readonly MemorySpec[], eventfds: Map<string, unknown>, log: (m: string) => void,
): MappedBar[] {
  const id = readIdentity(link);
  if (id.vendor === 0xffff || id.vendor === 0) throw new Error(`${cfg.device}: no PCI device answers in the remote (vendor ${hex(id.vendor)})`);
  const bars = sizeBars(link);
  const mapped = planBars(cfg.device, bars, cfg.bars, ram);
  programBars(link, mapped, bars);
  const intx = fdOf(eventfds.get(INTX_EVENTFD));
  const resample = fdOf(eventfds.get(INTX_RESAMPLE_EVENTFD));
  const pin = `INT${'ABCD'[id.interruptPin - 1] ?? '?'}`;
  let irq = 'no interrupt pin';
  if (id.interruptPin && intx !== undefined && resample !== undefined) {
    link.setIrqfd(intx, resample);
    irq = `${pin} on eventfds '${INTX_EVENTFD}'/'${INTX_RESAMPLE_EVENTFD}'`;
  } else if (id.interruptPin) {
    irq = `${pin} not wired (the manifest has no '${INTX_EVENTFD}' and '${INTX_RESAMPLE_EVENTFD}' eventfds)`;
  }
  if (ram.length) link.syncSysmem(ram.map((r) => ({ fd: r.fd, gpa: r.gpa, size: r.size, offset: r.offset })));
  log(`${cfg.device} ${id.vendor.toString(16).padStart(4, '0')}:${id.device.toString(16).padStart(4, '0')} ` +
    `class ${(id.classRevision >>> 8).toString(16).padStart(6, '0')}: ` +
    `${mapped.map((m) => `BAR${m.index} (${m.pio ? 'I/O' : 'memory'}, ${hex(m.size)} bytes) at ${hex(m.base)}`).join(', ')}; ` +
    `${irq}; ${ram.length} guest RAM region(s)`);
  return mapped;
}

export const qemuRemote: DeviceDefinition = {
  name: 'qemu-remote',
  description: 'a QEMU PCI device model in a multi-process QEMU remote (-machine x-remote): its BARs as ioregions, INTx through an irqfd',
  // The window depends on the QEMU device; this is what the conformance suite sweeps of BAR0.
  regionSize: 0x100,
  config: {
    device: "the QEMU -device driver: 'pci-testdev', 'nvme', 'virtio-blk-pci', ... (required)",
    bars: 'BAR number -> { gpa, size, pio }: where the guest finds each BAR it uses (required)',
    drive: 'a raw disk image attached as the device\'s drive',
    qemu: 'the qemu-system-x86_64 binary (default: found on PATH)',
    start_timeout_ms: 'how long the remote may take to start (default 15000)',
    '(any other key)': 'a -device property, key=value',
  },
  eventfds: { [INTX_EVENTFD]: 'the irqfd the device\'s INTx drives', [INTX_RESAMPLE_EVENTFD]: 'its resamplefd (end of interrupt)' },
  create(ctx) {
    const cfg = parseQemuRemoteConfig(ctx.config);
    const ram = ctx.guestMemory ?? [];
    if (ram.length > MPQEMU_MAX_FDS) throw new Error(`the remote takes at most ${MPQEMU_MAX_FDS} guest memory regions, the manifest has ${ram.length}`);
    const remote = launchRemote(cfg, ctx.log);
    try {
      const mapped = setUpRemoteDevice(remote.link, cfg, ram, ctx.eventfds, (m) => ctx.log(`qemu[${remote.pid}] ${m}`));
      remote.markServing();
      return new QemuBridge(remote.link, mapped, {
        log: ctx.log,
        onFailure(e: RemoteFailure): never {
          ctx.log(`${e.gone ? 'the remote is gone' : 'the remote broke the protocol'}: ${e.message}; ending the device task`);
          remote.stop();
          // exit_group, not process.exit: the stderr forwarder thread may sit in a blocking read,
          // and Node aborts (SIGABRT) when it must end a thread that is inside a system call.
          exitProcessNow(e.gone ? EXIT_REMOTE_GONE : EXIT_PROTOCOL);
        },
        close: remote.stop,
      });
    } catch (e) {
      remote.stop();
      if (e instanceof RemoteFailure) throw new Error(`${cfg.device}: the remote failed while the device was set up: ${e.message}`);
      throw e;
    }
  },
};
