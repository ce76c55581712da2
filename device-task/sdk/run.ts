// The whole life of a device task process around a device model: read and check the manifest
// (proto/device-task-manifest.ts), map guest memory, build the model the manifest names and serve
// it until KVM lets go. A device task of your own is `process.exitCode = runDeviceTask(myDevice)`.
//
// Exit codes: 0 clean shutdown, 1 internal error, 2 bad manifest, unknown device or a config the
// model rejects, 3 protocol violation by the peer (serve.ts).

import { MANIFEST_ENV, parseManifest } from '../../proto/device-task-manifest';
import { dieWithParent, setDumpable } from '../../proto/os';
import type { DeviceDefinition } from './device-model';
import { Eventfd, EventSignal } from './eventfd';
import { GuestMemoryDma } from './guest-memory';
import { checkManifestFds } from './manifest-fds';
import { serveDevice } from './serve';

export const EXIT_BAD_MANIFEST = 2;

/**
 * Run this process as a device task serving one of `devices` (by the manifest's `device` name), or
 * the one device given. Returns the exit code.
 */
export function runDeviceTask(devices: Record<string, DeviceDefinition> | DeviceDefinition): number {
  dieWithParent();
  // Device tasks of other VMs run as the same user: none may reach into this one (README "Trust model").
  setDumpable(false);
  const log = (m: string) => process.stderr.write(`device-task[${process.pid}]: ${m}\n`);
  const text = process.env[MANIFEST_ENV];
  if (text === undefined) {
    log(`${MANIFEST_ENV} is not set: a device task is started by its VMM (spawnDeviceTask) with its JSON manifest in that variable`);
    return EXIT_BAD_MANIFEST;
  }
  let manifest;
  try {
    manifest = parseManifest(text);
    checkManifestFds(manifest);
  } catch (e) {
    log((e as Error).message);
    return EXIT_BAD_MANIFEST;
  }
  const single = 'create' in devices ? (devices as DeviceDefinition) : undefined;
  const registry = single ? { [single.name]: single } : (devices as Record<string, DeviceDefinition>);
  // Own properties only: a device named "constructor" must not find Object's. A task built around one
  // device serves it whatever name its spawner gave.
  const def = single ?? (Object.hasOwn(registry, manifest.device) ? registry[manifest.device] : undefined);
  if (!def) {
    log(`unknown device '${manifest.device}' (known: ${Object.keys(registry).join(', ')})`);
    return EXIT_BAD_MANIFEST;
  }
  const eventfds = new Map<string, EventSignal>();
  for (const [name, fd] of Object.entries(manifest.eventfds)) eventfds.set(name, new Eventfd(fd, name));
  let memory: GuestMemoryDma;
  try {
    memory = GuestMemoryDma.map(manifest.memory);
  } catch (e) {
    log(`manifest: guest memory cannot be mapped: ${(e as Error).message}`);
    return EXIT_BAD_MANIFEST;
  }
  let model;
  try {
    model = def.create({ config: manifest.config, memory, eventfds, log, guestMemory: manifest.memory });
  } catch (e) {
    // A model rejects a config it cannot use when it is created: that is a bad manifest, not a crash.
    log(`device '${def.name}': bad config: ${(e as Error).message}`);
    return EXIT_BAD_MANIFEST;
  }
  const doorbells = new Map((def.listen ?? []).filter((n) => n in manifest.eventfds).map((n) => [n, manifest.eventfds[n]]));
  return serveDevice(model, {
    channels: manifest.channels, layout: manifest.layout, doorbells, lifelineFd: manifest.lifeline_fd, pollNs: manifest.poll_ns, log,
  });
}
