// The SPIFFE identity a peer certificate carries in its URI SAN.

import type { PeerCertificate } from 'node:tls';
import { uriSans } from '../core/identity.ts';

/** The single spiffe:// URI SAN, or null when there is none or more than one. */
export function spiffeIdOf(cert: PeerCertificate | undefined): string | null {
  const ids = uriSans(cert?.subjectaltname).filter((u) => u.startsWith('spiffe://'));
  return ids.length === 1 ? ids[0]! : null;
}
