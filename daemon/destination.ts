// Where an outbound connection goes: a Service VIP is resolved to one of its
// endpoints (and the target port to a number), a workload IP to that workload,
// anything else passes through unchanged.

import type { Service, ServicePort, Workload } from '../core/types.ts';
import type { ConfigStore } from './config-store.ts';
import type { LoadBalancer } from './load-balancer.ts';

export type Destination =
  /** A mesh workload (enrolled or not), reached at ip:port. */
  | { kind: 'workload'; workload: Workload; ip: string; port: number; service?: Service }
  /** Not a mesh workload: connect as the application asked. */
  | { kind: 'passthrough'; ip: string; port: number; service?: Service }
  /** A Service VIP whose port or endpoints cannot serve the connection. */
  | { kind: 'unavailable'; service: Service; reason: string };

export function resolveDestination(config: ConfigStore, balancer: LoadBalancer, ip: string, port: number): Destination {
  const service = config.serviceByVip(ip);
  if (service) return resolveService(config, balancer, service, port);
  const workload = config.workloadByIp(ip);
  return workload ? { kind: 'workload', workload, ip, port } : { kind: 'passthrough', ip, port };
}

function resolveService(config: ConfigStore, balancer: LoadBalancer, service: Service, port: number): Destination {
  const servicePort = service.ports.find((p) => p.port === port);
  const name = `${service.namespace}/${service.name}`;
  if (!servicePort) return { kind: 'unavailable', service, reason: `service ${name} has no port ${port}` };
  // Only endpoints whose target port can be resolved are candidates.
  const candidates = service.endpoints.filter((e) => e.ready && targetPort(servicePort, config.endpointWorkload(e)) !== undefined);
  const endpoint = balancer.choose(candidates);
  if (!endpoint) return { kind: 'unavailable', service, reason: `service ${name} has no ready endpoint for port ${port}` };
  const workload = config.endpointWorkload(endpoint);
  const target = targetPort(servicePort, workload)!;
  return workload
    ? { kind: 'workload', workload, ip: endpoint.ip, port: target, service }
    : { kind: 'passthrough', ip: endpoint.ip, port: target, service };
}

/** The numeric target port: ServicePort.targetPort, a named container port, or the service port itself. */
export function targetPort(sp: ServicePort, workload: Workload | undefined): number | undefined {
  if (sp.targetPort) return sp.targetPort;
  if (sp.targetPortName) return workload?.namedPorts[sp.targetPortName];
  return sp.port;
}

/**
 * The Service a connection to `workload` on `port` most likely came through: one
 * that has the workload as an endpoint with that target port. The destination
 * side cannot see the VIP the client dialled, so it reports this, as Istio does.
 */
export function serviceServing(config: ConfigStore, workload: Workload, port: number): Service | undefined {
  return config.servicesWithEndpoint(workload.ip).find((s) => s.ports.some((sp) => targetPort(sp, workload) === port));
}
