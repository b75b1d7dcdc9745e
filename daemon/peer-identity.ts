// The SPIFFE identity a peer certificate carries in its URI SAN.

import type { PeerCertificate } from 'node:tls';

/** URI SANs of a certificate as node:tls reports them ("URI:spiffe://..., DNS:..."). */
export function uriSans(cert: PeerCertificate | undefined): string[] {
  const san = cert?.subjectaltname;
  if (!san) return [];
  return san
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice('URI:'.length));
}

/** The single spiffe:// URI SAN, or null when there is none or more than one. */
export function spiffeIdOf(cert: PeerCertificate | undefined): string | null {
  const ids = uriSans(cert).filter((u) => u.startsWith('spiffe://'));
  return ids.length === 1 ? ids[0]! : null;
}
