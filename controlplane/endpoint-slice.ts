// EndpointSlice (discovery.k8s.io/v1) -> the endpoints it lists for its Service.
// When a Service has slices they are the truth; the selector is a fallback.

import type { KubeObject } from './source.ts';
import { FieldReader, describeObject } from './fields.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface SliceEndpoint {
  ip: string;
  ready: boolean;
  /** The Pod's uid from targetRef, when the slice names one. */
  podUid: string;
}

export interface MeshEndpointSlice {
  namespace: string;
  serviceName: string;
  endpoints: SliceEndpoint[];
}

export function toEndpointSlice(obj: KubeObject): MeshEndpointSlice {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj);
  const labels = f.stringMap(meta.fields.labels, 'metadata.labels');
  const serviceName = labels[SERVICE_NAME_LABEL];
  if (!serviceName) f.fail(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'required: names the Service the slice belongs to');
  const addressType = f.oneOf(obj.addressType, 'addressType', ['IPv4', 'IPv6', 'FQDN']);
  const endpoints: SliceEndpoint[] = [];
  if (addressType !== 'FQDN') {
    f.array(obj.endpoints, 'endpoints').forEach((e, i) => {
      const path = `endpoints[${i}]`;
      const fields = f.record(e, path) ?? {};
      const conditions = f.record(fields.conditions, `${path}.conditions`) ?? {};
      const targetRef = f.record(fields.targetRef, `${path}.targetRef`) ?? {};
      // An unknown (absent) ready condition counts as ready, as kube-proxy treats it.
      const ready = f.boolean(conditions.ready, `${path}.conditions.ready`) ?? true;
      const podUid = targetRef.kind === 'Pod' ? f.string(targetRef.uid, `${path}.targetRef.uid`) ?? '' : '';
      f.stringList(fields.addresses, `${path}.addresses`).forEach((ip, j) => {
        f.ip(ip, `${path}.addresses[${j}]`);
        endpoints.push({ ip, ready, podUid });
      });
    });
  }
  return { namespace: meta.namespace || 'default', serviceName, endpoints };
}
