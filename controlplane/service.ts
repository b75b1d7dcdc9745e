// Service -> the mesh's Service without endpoints (the model fills those from
// EndpointSlices or from the selector over pods), plus the selector.

import type { Service, ServicePort } from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, fieldPath, quote } from './fields.ts';
import { OPAQUE_PORTS_ANNOTATION } from './annotations.ts';

export interface MeshService {
  service: Service;
  /** null: no selector, endpoints come only from EndpointSlices. */
  selector: Record<string, string> | null;
}

export function toService(obj: KubeObject): MeshService {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj, true);
  const spec = f.record(obj.spec, 'spec') ?? {};
  const annotations = f.stringMap(meta.fields.annotations, 'metadata.annotations');
  const selector = f.record(spec.selector, 'spec.selector') ? f.stringMap(spec.selector, 'spec.selector') : null;
  return {
    service: {
      namespace: meta.namespace || 'default',
      name: meta.name,
      vips: clusterIps(f, spec),
      ports: servicePorts(f, spec),
      endpoints: [],
      opaquePorts: opaquePorts(f, annotations[OPAQUE_PORTS_ANNOTATION]),
    },
    selector: selector && Object.keys(selector).length > 0 ? selector : null,
  };
}

function clusterIps(f: FieldReader, spec: Record<string, unknown>): string[] {
  const single = f.string(spec.clusterIP, 'spec.clusterIP');
  const listed = f.stringList(spec.clusterIPs, 'spec.clusterIPs');
  const all = listed.length ? listed : single ? [single] : [];
  // "None" is a headless Service: clients reach pod IPs directly, there is no VIP.
  if (all.length === 1 && all[0] === 'None') return [];
  all.forEach((ip, i) => f.ip(ip, listed.length ? `spec.clusterIPs[${i}]` : 'spec.clusterIP'));
  return all;
}

function servicePorts(f: FieldReader, spec: Record<string, unknown>): ServicePort[] {
  const ports: ServicePort[] = [];
  f.array(spec.ports, 'spec.ports').forEach((p, i) => {
    const path = `spec.ports[${i}]`;
    const fields = f.record(p, path) ?? {};
    const port = f.port(fields.port, `${path}.port`);
    if (port === undefined) f.fail(`${path}.port`, 'required');
    const protocol = f.oneOf(fields.protocol, `${path}.protocol`, ['TCP', 'UDP', 'SCTP']) ?? 'TCP';
    // Only TCP is captured and meshed; other protocols flow past the mesh untouched.
    if (protocol !== 'TCP') return;
    let targetPort = port;
    let targetPortName = '';
    if (typeof fields.targetPort === 'string') {
      if (/^\d+$/.test(fields.targetPort)) targetPort = f.port(Number(fields.targetPort), `${path}.targetPort`)!;
      else {
        targetPortName = fields.targetPort;
        targetPort = 0;
      }
    } else if (fields.targetPort !== undefined) {
      targetPort = f.port(fields.targetPort, `${path}.targetPort`)!;
    }
    ports.push({
      name: f.string(fields.name, `${path}.name`) ?? '',
      port,
      targetPort,
      targetPortName,
      appProtocol: f.string(fields.appProtocol, `${path}.appProtocol`) ?? '',
    });
  });
  return ports;
}

function opaquePorts(f: FieldReader, value: string | undefined): number[] {
  if (!value?.trim()) return [];
  const path = fieldPath('metadata.annotations', OPAQUE_PORTS_ANNOTATION);
  return value.split(',').map((part) => {
    const s = part.trim();
    if (!/^\d+$/.test(s)) f.fail(path, `expected comma-separated port numbers, got ${quote(s)}`);
    return f.port(Number(s), path)!;
  });
}
