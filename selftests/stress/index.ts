// The fault campaigns the stress runner (npm run stress) and fault_campaigns_test know, in report order.

import { badReplies } from './bad-replies';
import { Campaign } from './campaign';
import { churn } from './churn';
import { deviceKill } from './device-kill';
import { ioctlFuzz } from './ioctl-fuzz';
import { ioctlModel } from './ioctl-model';
import { kickStorm } from './kick-storm';
import { processKill } from './process-kill';

export const CAMPAIGNS: Campaign[] = [deviceKill, badReplies, kickStorm, ioctlFuzz, ioctlModel, churn, processKill];
