// The destination-side access decision, shared by the inbound listeners, the
// same-node path and the re-check of open connections after a config change: the
// destination's current mTLS mode first, then its authorization policies.

import type { ConfigStore } from './config-store.ts';
import { authorize } from './authorization.ts';
import type { AuthorizationInput, Decision } from './authorization.ts';

export function checkAccess(config: ConfigStore, input: AuthorizationInput): Decision {
  // Re-read the workload: its labels (policy selectors) or mode may have changed.
  const destination = config.workloadByUid(input.destination.uid) ?? input.destination;
  if (input.sourcePrincipal === null && destination.mtlsMode === 'strict') {
    return {
      allowed: false,
      reason: `namespace ${destination.namespace} requires mutual TLS (nodemesh.io/mtls-mode: strict): plaintext from ${input.sourceIp} refused`,
    };
  }
  return authorize({ ...input, destination }, config.policiesFor(destination));
}
