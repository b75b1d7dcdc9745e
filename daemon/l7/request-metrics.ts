// Labels of nodemesh_requests_total and nodemesh_request_duration_seconds, as
// Istio's standard request metrics, for both reporters.

import type { Service, Workload } from '../../core/types.ts';
import type { RequestLabel } from '../metrics.ts';

export interface RequestReport {
  reporter: 'source' | 'destination';
  sourceWorkload?: Workload;
  sourcePrincipal: string | null;
  destinationWorkload?: Workload;
  destinationPrincipal: string | null;
  service?: Service;
  security: 'mutual_tls' | 'none';
  responseCode: number;
}

export function requestLabels(r: RequestReport): Record<RequestLabel, string> {
  return {
    reporter: r.reporter,
    source_workload: r.sourceWorkload?.workloadName ?? 'unknown',
    source_workload_namespace: r.sourceWorkload?.namespace ?? 'unknown',
    source_principal: r.sourcePrincipal ?? 'unknown',
    destination_workload: r.destinationWorkload?.workloadName ?? 'unknown',
    destination_workload_namespace: r.destinationWorkload?.namespace ?? 'unknown',
    destination_principal: r.destinationPrincipal ?? 'unknown',
    destination_service: r.service ? `${r.service.name}.${r.service.namespace}.svc.cluster.local` : 'unknown',
    connection_security_policy: r.security,
    response_code: String(r.responseCode),
  };
}
