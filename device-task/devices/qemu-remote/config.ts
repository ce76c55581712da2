// The qemu-remote device's config (the manifest's "config" object), checked once, and the QEMU
// command line it turns into.
//
//   {
//     "device": "nvme",                       // the QEMU -device driver to run in the remote
//     "drive": "/path/disk.img",              // optional: a raw image, attached as the device's drive
//     "serial": "deadbeef", ...               // any other key is a -device property (key=value)
//     "bars": {                               // which BARs the guest reaches, and where
//       "0": { "gpa": "0xe0000000", "size": "0x4000", "pio": false }
//     },
//     "qemu": "/usr/bin/qemu-system-x86_64",  // optional: the binary (default: found on PATH)
//     "start_timeout_ms": 15000               // optional: how long the remote may take to start
//   }
//
// Each entry of "bars" maps a BAR to one ioregion: the VMM registers that region with guest_paddr =
// gpa, memory_size = size, user_data = the BAR number (and KVM_IOREGION_PIO when pio is true); the
// bridge programs the BAR at the same gpa (an I/O port number for pio), so the remote's address space
// mirrors the guest's. size and pio are checked against what the device reports when its BARs are
// sized; the device task refuses to start if they differ. 64-bit numbers are hex strings, as
// everywhere in the manifest.

export const QEMU_BINARY = 'qemu-system-x86_64';
export const DEFAULT_START_TIMEOUT_MS = 15000;
/** BARs 0..5 of a type-0 config header. */
export const PCI_NUM_BARS = 6;
/** The x86 I/O port space. */
export const IO_SPACE_SIZE = 0x10000n;

/** One BAR the guest reaches: its number, where it lives, and what the VMM expects it to be. */
export interface BarMapping {
  index: number;
  gpa: bigint;
  /** Expected size in bytes; checked against the device when given. */
  size?: bigint;
  /** Expected kind (I/O ports or memory); checked against the device when given. */
  pio?: boolean;
}

export interface QemuRemoteConfig {
  device: string;
  drive?: string;
  /** -device properties, in config order. */
  props: [string, string][];
  bars: BarMapping[];
  qemu?: string;
  startTimeoutMs: number;
}

const RESERVED = new Set(['device', 'drive', 'bars', 'qemu', 'start_timeout_ms']);
/** QEMU device and property names: no commas or '=' (they would inject more options). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const HEX64 = /^0x[0-9a-f]{1,16}$/i;

function bad(what: string, v: unknown, want: string): never {
  throw new Error(`config.${what} must be ${want}, got ${JSON.stringify(v)}`);
}

function hex64(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !HEX64.test(v)) bad(what, v, 'a hex string of at most 64 bits ("0x...")');
  return BigInt(v);
}

const isPowerOfTwo = (v: bigint) => v > 0n && (v & (v - 1n)) === 0n;

function parseBars(raw: unknown): BarMapping[] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('bars', raw, 'an object of BAR number -> { gpa, size, pio }');
  const out: BarMapping[] = [];
  for (const [key, entry] of Object.entries(raw as Record<string, unknown>)) {
    const index = Number(key);
    if (!/^[0-5]$/.test(key)) bad(`bars.${key}`, key, `a BAR number 0..${PCI_NUM_BARS - 1}`);
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) bad(`bars.${key}`, entry, 'an object { gpa, size, pio }');
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) if (!['gpa', 'size', 'pio'].includes(k)) bad(`bars.${key}.${k}`, e[k], 'absent (known: gpa, size, pio)');
    const gpa = hex64(e.gpa, `bars.${key}.gpa`);
    // Address 0 is where PCI leaves a BAR unmapped: the remote would not decode it.
    if (gpa === 0n) bad(`bars.${key}.gpa`, e.gpa, 'non-zero (a BAR at 0 is unmapped)');
    const size = e.size === undefined ? undefined : hex64(e.size, `bars.${key}.size`);
    if (size !== undefined && !isPowerOfTwo(size)) bad(`bars.${key}.size`, e.size, 'a power of two');
    if (size !== undefined && gpa % size !== 0n) bad(`bars.${key}.gpa`, e.gpa, `aligned to the BAR size ${e.size}`);
    if (e.pio !== undefined && typeof e.pio !== 'boolean') bad(`bars.${key}.pio`, e.pio, 'true or false');
    const pio = e.pio as boolean | undefined;
    if (pio && gpa + (size ?? 1n) > IO_SPACE_SIZE) bad(`bars.${key}.gpa`, e.gpa, 'an I/O port range below 0x10000');
    out.push({ index, gpa, size, pio });
  }
  if (out.length === 0) bad('bars', raw, 'at least one BAR');
  return out.sort((a, b) => a.index - b.index);
}

function propValue(v: unknown, key: string): string {
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'string') return v;
  bad(key, v, 'a string, a number or a boolean (a -device property)');
}

/** Check a config and normalize it; throws an Error naming the bad field. */
export function parseQemuRemoteConfig(raw: Record<string, unknown>): QemuRemoteConfig {
  const device = raw.device;
  if (typeof device !== 'string' || !NAME.test(device)) bad('device', device, 'a QEMU device name, e.g. "nvme" or "pci-testdev"');
  const drive = raw.drive;
  if (drive !== undefined && (typeof drive !== 'string' || drive === '')) bad('drive', drive, 'the path of a raw disk image');
  const qemu = raw.qemu;
  if (qemu !== undefined && (typeof qemu !== 'string' || qemu === '')) bad('qemu', qemu, 'the path of a qemu-system-x86_64 binary');
  const timeout = raw.start_timeout_ms ?? DEFAULT_START_TIMEOUT_MS;
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0 || timeout > 0x7fffffff) {
    bad('start_timeout_ms', timeout, 'a positive whole number of milliseconds');
  }
  const props: [string, string][] = [];
  for (const [k, v] of Object.entries(raw)) {
    if (RESERVED.has(k)) continue;
    // "id" names the device for the remote object; "drive" is the top-level key.
    if (!NAME.test(k) || k === 'id') bad(k, k, 'a -device property name other than "id"');
    props.push([k, propValue(v, k)]);
  }
  return { device, drive: drive as string | undefined, props, bars: parseBars(raw.bars), qemu: qemu as string | undefined, startTimeoutMs: timeout };
}

/** A value inside a QEMU option list: commas are doubled, so they cannot start another option. */
export function qemuOptValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** The ids the command line gives the device and its drive. */
export const REMOTE_DEVICE_ID = 'dev0';
const DRIVE_ID = 'drive0';

/**
 * The remote's arguments (after the binary): an `x-remote` machine with nothing else in it, QMP on
 * `qmpFd`, the device, its drive, and the remote object that serves the device on `linkFd`.
 */
export function qemuRemoteArgs(cfg: QemuRemoteConfig, linkFd: number, qmpFd: number): string[] {
  const device = [cfg.device, `id=${REMOTE_DEVICE_ID}`];
  if (cfg.drive !== undefined) device.push(`drive=${DRIVE_ID}`);
  for (const [k, v] of cfg.props) device.push(`${k}=${qemuOptValue(v)}`);
  return [
    '-machine', 'x-remote', '-nodefaults', '-no-user-config', '-display', 'none',
    '-chardev', `socket,id=qmp0,fd=${qmpFd}`, '-mon', 'chardev=qmp0,mode=control',
    '-device', device.join(','),
    ...(cfg.drive !== undefined ? ['-drive', `id=${DRIVE_ID},file=${qemuOptValue(cfg.drive)},if=none,format=raw`] : []),
    '-object', `x-remote-object,id=robj0,devid=${REMOTE_DEVICE_ID},fd=${linkFd}`,
  ];
}
