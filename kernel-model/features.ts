// The kernel-model's optional features, one line each (ioeventfd, irqfd, ioregionfd plug in here).

import { ioeventfd } from './ioeventfd';
import { ioregionfdFeature } from './ioregionfd';
import { irqchip } from './irqchip';
import { irqfd } from './irqfd';
import type { KvmFeature } from './kvm';

export const FEATURES: KvmFeature[] = [
  ioregionfdFeature,
  ioeventfd,
  irqfd,
  irqchip,
];
