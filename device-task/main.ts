// Process entry of a built-in device task: serves the device model of the registry
// (device-task/devices) that its manifest names. See sdk/run.ts for the exit codes.

import { DEVICES } from './devices';
import { runDeviceTask } from './sdk/run';

process.exitCode = runDeviceTask(DEVICES);
