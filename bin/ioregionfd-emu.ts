#!/usr/bin/env node
// The package's command line: run the selftests or the benchmarks, list the device models, or be a
// device task. Each command is the project's own runner; this only dispatches to it.

import { spawnSync } from 'child_process';
import * as path from 'path';
import { DEVICES } from '../device-task/devices';
import { runDeviceTask } from '../device-task/sdk/run';
import { writeFdSync } from '../selftests/kselftest';

const DIST = path.join(__dirname, '..');

const USAGE = `Usage: ioregionfd-emu <command> [options]

A user-space model of KVM's ioregionfd (KVM_SET_IOREGION): a kernel-model process that plays kvm.ko,
device tasks that serve guest MMIO/PIO over 32-byte messages, and kselftest-style selftests.

Commands:
  selftests [options]   run the kvm selftests, TAP 13 on stdout (-h: the runner's options: -t NAME, -l, ...)
  bench [options]       run the benchmarks and print medians and ratios (-h: --quick, --case NAME, ...)
  devices               list the built-in device models, their config keys and eventfds
  device-task           serve a built-in device model (a VMM starts this, with IOREGIONFD_DEVICE_TASK set)
  help                  this text

A VMM in your own code: import { Kvm } from 'ioregionfd-emu' (see README.md).
`;

/** Run one of the compiled runners in a child process and exit with its status. */
function runner(script: string, args: string[]): never {
  const r = spawnSync(process.execPath, ['--enable-source-maps', path.join(DIST, script), ...args], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

function listDevices(): void {
  for (const d of Object.values(DEVICES)) {
    writeFdSync(1, `${d.name}\n  ${d.description}\n  register window: ${d.regionSize} bytes\n`);
    for (const [key, what] of Object.entries(d.config ?? {})) writeFdSync(1, `  config.${key}: ${what}\n`);
    for (const [name, role] of Object.entries(d.eventfds ?? {})) writeFdSync(1, `  eventfd ${name}: ${role}\n`);
  }
}

function main(argv: string[]): void {
  const [command, ...args] = argv;
  switch (command) {
    case 'selftests':
      return runner('selftests/run_kselftest.js', args);
    case 'bench':
      return runner('selftests/run_bench.js', args);
    case 'devices':
      return listDevices();
    case 'device-task':
      // In this process: the device task's fds (3 and up) are ours, a child would not have them.
      process.exitCode = runDeviceTask(DEVICES);
      return;
    case undefined:
    case 'help':
    case '-h':
    case '--help':
      writeFdSync(1, USAGE);
      return;
    default:
      writeFdSync(2, `ioregionfd-emu: unknown command '${command}'\n\n${USAGE}`);
      process.exit(2);
  }
}

main(process.argv.slice(2));
