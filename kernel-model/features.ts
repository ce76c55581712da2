// The kernel-model's optional features, one line each (ioeventfd, irqfd, ioregionfd plug in here).

import { ioregionfdFeature } from './ioregionfd';
import type { KvmFeature } from './kvm';

export const FEATURES: KvmFeature[] = [
  ioregionfdFeature,
];
