// The device end of floor_node_rtt / floor_node_posted_rate (dispatch_perf_test, lib/perf_floor.ts): a Node
// process that serves the protocol of transport_floor.c's child on fd 3 with one blocking koffi
// read(2) per message and one write(2) per answer, the I/O style of the model's device tasks.

import { readRaw, writeRaw } from '../../../proto/os';
import { CMD_FENCE, CMD_QUIT, CMD_READ, CMD_WRITE, FLOOR_MSG } from './floor_protocol';

function serve(fd: number): number {
  const buf = new Uint8Array(2 * FLOOR_MSG);
  const view = new DataView(buf.buffer);
  let writes = 0n;
  for (;;) {
    const n = readRaw(fd, buf, buf.length);
    if (n === 0) return 0;
    if (n !== FLOOR_MSG) return 3;
    switch (buf[0]) {
      case CMD_READ:
        view.setBigUint64(16, view.getBigUint64(8, true) + 1n, true);
        if (writeRaw(fd, buf, FLOOR_MSG, true) !== FLOOR_MSG) return 4;
        break;
      case CMD_WRITE:
        if (view.getBigUint64(8, true) !== writes) return 5;
        writes++;
        break;
      case CMD_FENCE:
        view.setBigUint64(16, writes, true);
        writes = 0n;
        if (writeRaw(fd, buf, FLOOR_MSG, true) !== FLOOR_MSG) return 4;
        break;
      case CMD_QUIT:
        return 0;
      default:
        return 6;
    }
  }
}

process.exitCode = serve(3);
