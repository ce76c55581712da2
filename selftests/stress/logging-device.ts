// A device task for the data-path campaigns: it logs every command it receives to a file, in arrival
// order, answers a read with the last value written at the same offset (of any region), and can kill
// itself with SIGKILL at a chosen point of a chosen command. The kill comes from inside because only
// the device knows exactly where it is in a transaction (before reading command k, after reading it,
// after half a response); the log is written before it dies, so the VMM knows what it received.
//
// Manifest config: LoggingDeviceConfig.
// One channel, v3 layout. Exits 0 at EOF on the channel.

import * as fs from 'fs';
import { MANIFEST_ENV, parseManifest } from '../../proto/device-task-manifest';
import { decodeCmd, encodeResp, IOREGIONFD_CMD_READ, IOREGIONFD_MSG_SIZE } from '../../proto/ioregionfd-wire';
import { dieWithParent, readRaw, writeRaw } from '../../proto/os';

/** Where in a transaction the device dies: command k not yet read, read but not answered, half answered. */
export type KillPoint = 'before-read' | 'after-read' | 'partial-reply';

export interface LoggingDeviceConfig {
  log: string;
  die?: { at: number; point: KillPoint };
  /** Write each log line as it happens (needed when the device dies); otherwise at EOF. */
  flushEach?: boolean;
  /** Sleep this long (ms, fractions allowed) after each command: a slow device, so the guest waits on it. */
  pauseMs?: number;
}

/** One logged command. */
export interface LoggedCommand {
  write: boolean;
  userData: bigint;
  offset: bigint;
  data: bigint;
}

/** Read a log file written by this device. */
export function readDeviceLog(file: string): LoggedCommand[] {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  return text.split('\n').filter((l) => l).map((l) => {
    const [cmd, userData, offset, data] = l.split(' ');
    return { write: cmd === 'W', userData: BigInt(userData), offset: BigInt(offset), data: BigInt(data) };
  });
}

function main(): number {
  dieWithParent();
  const manifest = parseManifest(process.env[MANIFEST_ENV] ?? '');
  const config = manifest.config as unknown as LoggingDeviceConfig;
  const { cmd_fd: cmdFd, resp_fd: respFd, transport } = manifest.channels[0];
  const logFd = fs.openSync(config.log, 'w');
  let pending: string[] = [];
  const flush = () => {
    if (pending.length) fs.writeSync(logFd, pending.join(''));
    pending = [];
  };
  const die = () => {
    flush();
    process.kill(process.pid, 'SIGKILL');
  };
  const frame = new Uint8Array(IOREGIONFD_MSG_SIZE);
  const view = new DataView(frame.buffer);
  const reply = new Uint8Array(IOREGIONFD_MSG_SIZE);
  const replyView = new DataView(reply.buffer);
  const last = new Map<bigint, bigint>();
  const isSocket = transport !== 'pipe';
  const pause = new Int32Array(new SharedArrayBuffer(4));

  /** One whole command; false at EOF or when the channel broke. */
  const readFrame = (): boolean => {
    let got = 0;
    while (got < IOREGIONFD_MSG_SIZE) {
      const n = readRaw(cmdFd, got ? frame.subarray(got) : frame, IOREGIONFD_MSG_SIZE - got);
      if (n <= 0) return false;
      got += n;
    }
    return true;
  };
  const send = (len: number): boolean => {
    let sent = 0;
    while (sent < len) {
      const n = writeRaw(respFd, sent ? reply.subarray(sent) : reply, len - sent, isSocket);
      if (n <= 0) return false;
      sent += n;
    }
    return true;
  };

  for (let k = 1; ; k++) {
    if (config.die?.at === k && config.die.point === 'before-read') die();
    if (!readFrame()) break;
    const c = decodeCmd(manifest.layout, view);
    const write = c.cmd !== IOREGIONFD_CMD_READ;
    pending.push(`${write ? 'W' : 'R'} ${c.userData} ${c.offset} ${c.data}\n`);
    if (config.flushEach || pending.length >= 4096) flush();
    if (write) last.set(c.offset, c.data);
    if (config.pauseMs) Atomics.wait(pause, 0, 0, config.pauseMs);
    if (config.die?.at === k && config.die.point === 'after-read') die();
    if (!c.resp) continue;
    encodeResp(write ? 0n : last.get(c.offset) ?? 0n, replyView, 0);
    if (config.die?.at === k && config.die.point === 'partial-reply') {
      send(IOREGIONFD_MSG_SIZE / 2);
      die();
    }
    if (!send(IOREGIONFD_MSG_SIZE)) break;
  }
  flush();
  fs.closeSync(logFd);
  return 0;
}

if (require.main === module) process.exitCode = main();
