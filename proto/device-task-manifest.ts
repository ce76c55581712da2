// The device-task fd contract: how a spawned device task (any executable) learns which of its fds
// carry ioregionfd commands, where responses go, how guest memory and eventfds arrive.
//
// The spawner puts a JSON manifest in the environment variable IOREGIONFD_DEVICE_TASK and passes every
// fd the manifest names at exactly that number: 3, 4, ... with no gap (the task refuses anything else,
// so a manifest can never name one of the runtime's own fds). 64-bit numbers are hex strings ("0x1000").
//
//   {
//     "version": 1,
//     "device": "testdev",                      // which model (for our device-task/main.js)
//     "config": { ... },                        // model-specific options
//     "layout": "v3",                           // wire layout: "v3" (RFC v3) or "v1" (v1/v2 info word)
//     "channels": [                             // one per (read_fd, write_fd) pair given to KVM_SET_IOREGION
//       { "cmd_fd": 3, "resp_fd": 3, "transport": "seqpacket" }   // read commands from cmd_fd,
//     ],                                                          // write responses to resp_fd
//     "memory": [ { "fd": 4, "gpa": "0x0", "size": "0x400000", "offset": "0x0" } ],  // guest RAM
//     "eventfds": { "doorbell": 5, "irq": 6 },  // named eventfds (ioeventfd / irqfd ends)
//     "lifeline_fd": 7,                         // EOF here = shut down cleanly
//     "poll_ns": 50000                          // optional: spin this long for a command before blocking
//   }
//
// transport: "seqpacket" (one 32-byte frame per read), "stream" (frames may be split or coalesced),
// "pipe" (cmd_fd and resp_fd are the ends of two different pipes).

export const MANIFEST_ENV = 'IOREGIONFD_DEVICE_TASK';
export const MANIFEST_VERSION = 1;

export type Transport = 'seqpacket' | 'stream' | 'pipe';

export interface ChannelSpec {
  cmd_fd: number;
  resp_fd: number;
  transport: Transport;
}

export interface MemorySpec {
  fd: number;
  gpa: bigint;
  size: bigint;
  offset: bigint;
}

export interface DeviceTaskManifest {
  version: number;
  device: string;
  config: Record<string, unknown>;
  layout: 'v3' | 'v1';
  channels: ChannelSpec[];
  memory: MemorySpec[];
  eventfds: Record<string, number>;
  lifeline_fd?: number;
  /** How long the task spins for its next command before it blocks (ns; 0 = never; absent = the SDK's default). */
  poll_ns?: number;
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

export function encodeManifest(m: DeviceTaskManifest): string {
  return JSON.stringify({ ...m, memory: m.memory.map((r) => ({ fd: r.fd, gpa: hex(r.gpa), size: hex(r.size), offset: hex(r.offset) })) });
}

function nsField(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`manifest: ${what} must be a whole number of nanoseconds, got ${JSON.stringify(v)}`);
  return v;
}

function fdField(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`manifest: ${what} must be an fd number, got ${JSON.stringify(v)}`);
  return v;
}

function u64Field(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/i.test(v)) throw new Error(`manifest: ${what} must be a hex string of at most 64 bits, got ${JSON.stringify(v)}`);
  return BigInt(v);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function objectField(v: unknown, what: string): Record<string, unknown> {
  if (v === undefined) return {};
  if (!isObject(v)) throw new Error(`manifest: ${what} must be an object, got ${JSON.stringify(v)}`);
  return v;
}

function listField(v: unknown, what: string): Record<string, unknown>[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new Error(`manifest: ${what} must be an array, got ${JSON.stringify(v)}`);
  return v.map((e, i) => {
    if (!isObject(e)) throw new Error(`manifest: ${what}[${i}] must be an object, got ${JSON.stringify(e)}`);
    return e;
  });
}

/** Parse and check a manifest; throws Error naming the bad field. */
export function parseManifest(text: string): DeviceTaskManifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`manifest: not JSON: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) throw new Error(`manifest: must be a JSON object, got ${JSON.stringify(parsed)}`);
  const raw = parsed;
  if (raw.version !== MANIFEST_VERSION) throw new Error(`manifest: version ${JSON.stringify(raw.version)} is not ${MANIFEST_VERSION}`);
  if (typeof raw.device !== 'string') throw new Error('manifest: device must be a string');
  const layout = raw.layout ?? 'v3';
  if (layout !== 'v3' && layout !== 'v1') throw new Error(`manifest: layout must be "v3" or "v1", got ${JSON.stringify(layout)}`);
  const channels = listField(raw.channels, 'channels').map((c, i) => {
    const transport = c.transport;
    if (transport !== 'seqpacket' && transport !== 'stream' && transport !== 'pipe') throw new Error(`manifest: channels[${i}].transport ${JSON.stringify(transport)} is unknown`);
    return { cmd_fd: fdField(c.cmd_fd, `channels[${i}].cmd_fd`), resp_fd: fdField(c.resp_fd, `channels[${i}].resp_fd`), transport } as ChannelSpec;
  });
  const memory = listField(raw.memory, 'memory').map((r, i) => ({
    fd: fdField(r.fd, `memory[${i}].fd`), gpa: u64Field(r.gpa, `memory[${i}].gpa`),
    size: u64Field(r.size, `memory[${i}].size`), offset: u64Field(r.offset, `memory[${i}].offset`),
  }));
  const eventfds: Record<string, number> = {};
  for (const [k, v] of Object.entries(objectField(raw.eventfds, 'eventfds'))) eventfds[k] = fdField(v, `eventfds.${k}`);
  const config = objectField(raw.config, 'config');
  return {
    version: MANIFEST_VERSION, device: raw.device, config, layout,
    channels, memory, eventfds,
    lifeline_fd: raw.lifeline_fd === undefined ? undefined : fdField(raw.lifeline_fd, 'lifeline_fd'),
    poll_ns: raw.poll_ns === undefined ? undefined : nsField(raw.poll_ns, 'poll_ns'),
  };
}
