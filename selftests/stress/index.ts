// The fault campaigns the stress runner (npm run stress) and fault_campaigns_test know, in report order.

import { Campaign } from './campaign';
import { ioctlFuzz } from './ioctl-fuzz';
import { ioctlModel } from './ioctl-model';

export const CAMPAIGNS: Campaign[] = [ioctlFuzz, ioctlModel];
