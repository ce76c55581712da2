// Process entry of a device task: reads the manifest (proto/device-task-manifest.ts), builds the
// named device model and serves it. Exit codes: 0 clean shutdown, 1 internal error, 2 bad manifest,
// unknown device or a config the model rejects, 3 protocol violation by the peer.

import { MANIFEST_ENV, parseManifest } from '../proto/device-task-manifest';
import { dieWithParent, setDumpable } from '../proto/os';
import { DEVICES } from './devices';
import { Eventfd, EventSignal } from './sdk/eventfd';
import { GuestMemoryDma } from './sdk/guest-memory';
import { checkManifestFds } from './sdk/manifest-fds';
import { serveDevice } from './sdk/serve';

function main(): number {
  dieWithParent();
  // Device tasks of other VMs run as the same user: none may reach into this one (README "Trust model").
  setDumpable(false);
  const log = (m: string) => process.stderr.write(`device-task[${process.pid}]: ${m}\n`);
  const text = process.env[MANIFEST_ENV];
  if (text === undefined) {
    log(`${MANIFEST_ENV} is not set: a device task is started by its VMM (spawn_device_task) with its JSON manifest in that variable`);
    return 2;
  }
  let manifest;
  try {
    manifest = parseManifest(text);
    checkManifestFds(manifest);
  } catch (e) {
    log((e as Error).message);
    return 2;
  }
  // Own properties only: a device named "constructor" must not find Object's.
  const def = Object.hasOwn(DEVICES, manifest.device) ? DEVICES[manifest.device] : undefined;
  if (!def) {
    log(`unknown device '${manifest.device}' (known: ${Object.keys(DEVICES).join(', ')})`);
    return 2;
  }
  const eventfds = new Map<string, EventSignal>();
  for (const [name, fd] of Object.entries(manifest.eventfds)) eventfds.set(name, new Eventfd(fd, name));
  let memory: GuestMemoryDma;
  try {
    memory = GuestMemoryDma.map(manifest.memory);
  } catch (e) {
    log(`manifest: guest memory cannot be mapped: ${(e as Error).message}`);
    return 2;
  }
  let model;
  try {
    model = def.create({ config: manifest.config, memory, eventfds, log, guestMemory: manifest.memory });
  } catch (e) {
    // A model rejects a config it cannot use when it is created: that is a bad manifest, not a crash.
    log(`device '${def.name}': bad config: ${(e as Error).message}`);
    return 2;
  }
  const doorbells = new Map((def.listen ?? []).filter((n) => n in manifest.eventfds).map((n) => [n, manifest.eventfds[n]]));
  return serveDevice(model, { channels: manifest.channels, layout: manifest.layout, doorbells, lifelineFd: manifest.lifeline_fd, log });
}

process.exitCode = main();
