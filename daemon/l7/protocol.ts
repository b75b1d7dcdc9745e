// Which protocol a destination port speaks, from what the Service declares:
// `appProtocol` first (http, kubernetes.io/h2c, grpc...), then the port name
// prefix (Istio's convention: http-*, http2-*, grpc-*); ports listed in the
// Service's opaque-ports annotation are TCP whatever they are named. Anything
// undeclared is detected from the client's first bytes.

import type { Service, ServicePort } from '../../core/types.ts';
import type { ConfigStore } from '../config-store.ts';
import { targetPort } from '../destination.ts';

export type PortProtocol =
  /** HTTP/1.1, or HTTP/2 when the client opens with the HTTP/2 preface. */
  | 'http'
  /** HTTP/2 with prior knowledge (h2c, gRPC). */
  | 'http2'
  | 'opaque'
  | 'detect';

const HTTP2_APP_PROTOCOLS = new Set(['kubernetes.io/h2c', 'grpc', 'http2', 'h2c', 'grpc-web']);
const HTTP_APP_PROTOCOLS = new Set(['http', 'kubernetes.io/ws']);
const OPAQUE_APP_PROTOCOLS = new Set(['tcp', 'https', 'tls', 'kubernetes.io/wss', 'mysql', 'mongo', 'redis']);

export function servicePortProtocol(service: Service, port: ServicePort): PortProtocol {
  if (service.opaquePorts.includes(port.port)) return 'opaque';
  const app = port.appProtocol.toLowerCase();
  if (HTTP2_APP_PROTOCOLS.has(app)) return 'http2';
  if (HTTP_APP_PROTOCOLS.has(app)) return 'http';
  if (app && OPAQUE_APP_PROTOCOLS.has(app)) return 'opaque';
  const name = port.name.toLowerCase();
  if (/^(?:http2|grpc|grpc-web)(?:-|$)/.test(name)) return 'http2';
  if (/^http(?:-|$)/.test(name)) return 'http';
  if (/^(?:tcp|tls|https|mysql|mongo|redis)(?:-|$)/.test(name)) return 'opaque';
  return 'detect';
}

/**
 * The protocol of an original destination: a Service VIP's port as declared; a
 * pod IP's port as declared by a Service that targets it (the strongest
 * declaration wins, so one opaque declaration keeps the port opaque).
 */
export function destinationProtocol(config: ConfigStore, ip: string, port: number): PortProtocol {
  const service = config.serviceByVip(ip);
  if (service) {
    const servicePort = service.ports.find((p) => p.port === port);
    return servicePort ? servicePortProtocol(service, servicePort) : 'detect';
  }
  const workload = config.workloadByIp(ip);
  if (!workload) return 'detect';
  const declared = new Set<PortProtocol>();
  for (const s of config.servicesWithEndpoint(ip)) {
    for (const sp of s.ports) {
      if (targetPort(sp, workload) === port) declared.add(s.opaquePorts.includes(sp.port) ? 'opaque' : servicePortProtocol(s, sp));
    }
  }
  for (const p of ['opaque', 'http2', 'http'] as const) if (declared.has(p)) return p;
  return 'detect';
}

/**
 * The Service that declares a pod port HTTP or HTTP/2 (so its node parses it and
 * authorizes each request), when no Service declares the port opaque.
 */
export function httpServiceOf(config: ConfigStore, podIp: string, port: number): Service | undefined {
  if (config.serviceByVip(podIp)) return undefined;
  const protocol = destinationProtocol(config, podIp, port);
  if (protocol !== 'http' && protocol !== 'http2') return undefined;
  const workload = config.workloadByIp(podIp);
  return config.servicesWithEndpoint(podIp).find((s) => s.ports.some((sp) => targetPort(sp, workload) === port && servicePortProtocol(s, sp) === protocol));
}
