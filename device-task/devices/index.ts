// The device registry: adding a device model is its own file plus one line here.

import type { DeviceDefinition } from '../sdk/device-model';
import { doorbell } from './doorbell';
import { mirror } from './mirror';
import { nvme } from './nvme';
import { qemuRemote } from './qemu-remote';
import { regfile } from './regfile';
import { rendezvous } from './rendezvous';
import { testdev } from './testdev';

export const DEVICES: Record<string, DeviceDefinition> = {
  [testdev.name]: testdev,
  [regfile.name]: regfile,
  [doorbell.name]: doorbell,
  [mirror.name]: mirror,
  [rendezvous.name]: rendezvous,
  [qemuRemote.name]: qemuRemote,
  [nvme.name]: nvme,
};
