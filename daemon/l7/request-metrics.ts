// Labels of nodemesh_requests_total and nodemesh_request_duration_seconds, as
// Istio's standard request metrics, for both reporters.

import { peerLabels } from '../metrics.ts';
import type { PeerReport, RequestLabel } from '../metrics.ts';

export interface RequestReport extends PeerReport {
  responseCode: number;
}

export function requestLabels(r: RequestReport): Record<RequestLabel, string> {
  return { ...peerLabels(r), response_code: String(r.responseCode) };
}
