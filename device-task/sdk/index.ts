// The device SDK, as other projects import it: what a device model implements, the pieces it is built
// from (registers, DMA into guest memory, eventfds), the serve loop, the whole device-task process
// (runDeviceTask), and the conformance suite every model should pass.

export type { DeviceContext, DeviceDefinition, DeviceModel } from './device-model';
export { RegisterSpace, type RegisterDef } from './register-space';
export { GuestMemoryDma } from './guest-memory';
export { Eventfd, type EventSignal, type EventWaiter } from './eventfd';
export { EXIT_INTERNAL, EXIT_OK, EXIT_PROTOCOL, serveDevice, type ServeOptions } from './serve';
export { EXIT_BAD_MANIFEST, runDeviceTask } from './run';
export { checkConformance, fakeDeviceContext, type ConformanceOptions, type FakeContextOptions, type FakeDeviceContext, RecordingSignal } from './conformance';
export { MANIFEST_ENV, type ChannelSpec, type DeviceTaskManifest, type MemorySpec, type Transport } from '../../proto/device-task-manifest';
