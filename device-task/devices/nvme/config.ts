// The nvme device's configuration (the manifest's "config" object), checked when the model is created:
// a bad value is an Error naming the key, which device-task/main.ts reports as a bad config (exit 2).
//
//   image                 path of a raw disk image: namespace 1 (absent: a RAM namespace of ram_size bytes)
//   size                  bytes (or "256M", "1G"): create the image as a sparse file of this size if it is
//                         missing (without an image: the size of the RAM namespace)
//   lba_size              512 (default) or 4096
//   namespaces            [{ image, size, lba_size } | { ram_size, lba_size }, ...]: several namespaces instead
//   ram_size              bytes of a RAM namespace (default 1 MiB)
//   serial                serial number (default derived from the first image's path)
//   queues                I/O queue pairs the controller offers (default 64, at most 1023)
//   queue_entries         entries per I/O queue at most: CAP.MQES + 1 (default 1024, 2..65536)
//   mdts                  maximum data transfer size, 2^mdts pages of 4 KiB (default 7 = 512 KiB; 0 = no limit)
//   vectors               interrupt vectors, raised through eventfds irq0, irq1, ... (default: how many
//                         irqN eventfds the task was given, counting from irq0)
//   volatile_write_cache  advertise a volatile write cache (default true): Flush and shutdown fdatasync
//   weighted_round_robin  advertise WRR arbitration with urgent priority class (default true)
//   shadow_doorbells      advertise Doorbell Buffer Config (default true)

export interface NamespaceConfig {
  image?: string;
  /** Create the image with this many bytes if it does not exist. */
  createSize?: number;
  ramSize: number;
  lbaSize: number;
}

export interface NvmeConfig {
  namespaces: NamespaceConfig[];
  serial: string;
  queues: number;
  queueEntries: number;
  mdts: number;
  vectors: number | undefined;
  volatileWriteCache: boolean;
  weightedRoundRobin: boolean;
  shadowDoorbells: boolean;
}

export const DEFAULT_RAM_SIZE = 1 << 20;
export const MAX_QUEUES = 1023;
export const MAX_VECTORS = 2048;

const KEYS = new Set([
  'image', 'size', 'lba_size', 'namespaces', 'ram_size', 'serial', 'queues', 'queue_entries', 'mdts', 'vectors',
  'volatile_write_cache', 'weighted_round_robin', 'shadow_doorbells',
]);

function bad(key: string, want: string, got: unknown): never {
  throw new Error(`config.${key} must be ${want}, got ${JSON.stringify(got)}`);
}

function integer(key: string, v: unknown, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(key, `an integer in [${min}, ${max}]`, v);
  return v;
}

function bool(key: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') bad(key, 'true or false', v);
  return v;
}

/** Bytes: a number, or a string with an optional K/M/G/T suffix (powers of 1024). */
export function parseBytes(key: string, v: unknown): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v;
  if (typeof v === 'string') {
    const m = /^(\d+)([KMGT]?)$/i.exec(v.trim());
    if (m) {
      const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
      if (Number.isSafeInteger(n) && n > 0) return n;
    }
  }
  return bad(key, 'a positive size in bytes ("256M", 1048576)', v);
}

function namespace(where: string, o: Record<string, unknown>): NamespaceConfig {
  const lbaSize = o.lba_size ?? 512;
  if (lbaSize !== 512 && lbaSize !== 4096) bad(`${where}lba_size`, '512 or 4096', lbaSize);
  if (o.image !== undefined && (typeof o.image !== 'string' || o.image === '')) bad(`${where}image`, 'a file path', o.image);
  const ns: NamespaceConfig = {
    image: o.image as string | undefined,
    ramSize: o.ram_size === undefined ? DEFAULT_RAM_SIZE : parseBytes(`${where}ram_size`, o.ram_size),
    lbaSize: lbaSize as number,
  };
  if (o.size !== undefined) {
    // With an image, the size it is created with; without one, the size of the RAM namespace.
    const size = parseBytes(`${where}size`, o.size);
    if (ns.image !== undefined) ns.createSize = size;
    else ns.ramSize = size;
  }
  if (ns.ramSize < lbaSize) bad(`${where}ram_size`, `at least one block (${lbaSize} bytes)`, o.ram_size);
  return ns;
}

export function parseConfig(raw: Record<string, unknown>): NvmeConfig {
  for (const k of Object.keys(raw)) if (!KEYS.has(k)) throw new Error(`config.${k} is not an nvme setting (known: ${[...KEYS].join(', ')})`);
  let namespaces: NamespaceConfig[];
  if (raw.namespaces !== undefined) {
    if (!Array.isArray(raw.namespaces) || raw.namespaces.length === 0 || raw.namespaces.length > 64) bad('namespaces', 'an array of 1 to 64 namespace objects', raw.namespaces);
    if (raw.image !== undefined) throw new Error('config.image and config.namespaces exclude each other');
    namespaces = raw.namespaces.map((n, i) => {
      if (typeof n !== 'object' || n === null || Array.isArray(n)) bad(`namespaces[${i}]`, 'an object', n);
      return namespace(`namespaces[${i}].`, n as Record<string, unknown>);
    });
  } else {
    namespaces = [namespace('', raw)];
  }
  const serial = raw.serial ?? defaultSerial(namespaces[0].image);
  if (typeof serial !== 'string' || !/^[\x20-\x7e]{1,20}$/.test(serial)) bad('serial', '1 to 20 printable ASCII characters', serial);
  const vectors = raw.vectors === undefined ? undefined : integer('vectors', raw.vectors, 1, MAX_VECTORS, 1);
  return {
    namespaces, serial,
    queues: integer('queues', raw.queues, 1, MAX_QUEUES, 64),
    queueEntries: integer('queue_entries', raw.queue_entries, 2, 65536, 1024),
    mdts: integer('mdts', raw.mdts, 0, 15, 7),
    vectors,
    volatileWriteCache: bool('volatile_write_cache', raw.volatile_write_cache, true),
    weightedRoundRobin: bool('weighted_round_robin', raw.weighted_round_robin, true),
    shadowDoorbells: bool('shadow_doorbells', raw.shadow_doorbells, true),
  };
}

/** A stable serial number: a short hash of the image path (the same image, the same serial). */
function defaultSerial(image: string | undefined): string {
  let h = 0x811c9dc5;
  for (const ch of image ?? 'ram') h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return `IOREGIONFD${h.toString(16).padStart(8, '0').toUpperCase()}`;
}
