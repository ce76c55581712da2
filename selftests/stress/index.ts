// The fault campaigns the stress runner (npm run stress) and fault_campaigns_test know, in report order.

import { Campaign } from './campaign';

export const CAMPAIGNS: Campaign[] = [];
