// Process entry of a device task: reads the manifest (proto/device-task-manifest.ts), builds the
// named device model and serves it. Exit codes: 0 clean shutdown, 1 internal error, 2 bad manifest,
// unknown device or a config the model rejects, 3 protocol violation by the peer.

import { MANIFEST_ENV, parseManifest } from '../proto/device-task-manifest';
import { dieWithParent } from '../proto/os';
import { DEVICES } from './devices';
import { Eventfd, EventSignal } from './sdk/eventfd';
import { GuestMemoryDma } from './sdk/guest-memory';
import { serveDevice } from './sdk/serve';

function main(): number {
  dieWithParent();
  const log = (m: string) => process.stderr.write(`device-task[${process.pid}]: ${m}\n`);
  let manifest;
  try {
    manifest = parseManifest(process.env[MANIFEST_ENV] ?? '');
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
  const memory = GuestMemoryDma.map(manifest.memory);
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
