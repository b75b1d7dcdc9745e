// Both nodes of one meshed connection in one process, on loopback, for the
// in-process benchmarks (l7-inprocess.ts, bulk-inprocess.ts): the source
// node's outbound side, told the original destination is a Service VIP; an
// HBONE tunnel over real TLS; the destination node's inbound side in front of
// a "pod" the caller listens on 127.0.0.3. No capture: clients connect to the
// outbound listener's port.

import type { AddressInfo, Server } from 'node:net';
import { Registry } from 'prom-client';
import { setLevel } from '../../core/log.ts';
import type { Resource, Service } from '../../core/types.ts';
import { createMeshCa } from '../../testdata/mesh-ca.ts';
import { Admission } from '../../daemon/admission.ts';
import { ConfigStore } from '../../daemon/config-store.ts';
import { ConnectionTracker } from '../../daemon/connection-tracker.ts';
import { HbonePool } from '../../daemon/hbone-pool.ts';
import { InboundListener } from '../../daemon/inbound.ts';
import { HttpInbound } from '../../daemon/l7/http-inbound.ts';
import { createOutboundHttp } from '../../daemon/l7/outbound-http.ts';
import { LoadBalancer } from '../../daemon/load-balancer.ts';
import { createMetrics } from '../../daemon/metrics.ts';
import { OutboundListener } from '../../daemon/outbound.ts';
import { MemoryCertSource, spiffe, workload } from '../../daemon/testdata/mesh-fixture.ts';

/** The pod's address: the caller's server listens there. */
export const POD_IP = '127.0.0.3';

/**
 * Starts both nodes in front of `pod` (already listening on POD_IP), whose
 * Service port has `appProtocol` ('http' is parsed on the source node, 'tcp'
 * relayed). Returns the port clients connect to.
 */
export async function inProcessNodes(pod: Server, opts: { appProtocol: 'http' | 'tcp'; destinationRequestMetrics?: boolean }): Promise<number> {
  // Every connection logs its open and close.
  setLevel('warn');
  const client = workload('frontend', '127.0.0.1', 'n2', { namespace: 'web' });
  const destination = workload('cart', POD_IP, 'n1');
  const service: Service = {
    namespace: 'shop', name: 'cart', vips: ['10.96.0.11'], opaquePorts: [],
    ports: [{ name: opts.appProtocol, port: 80, targetPort: (pod.address() as AddressInfo).port, targetPortName: '', appProtocol: opts.appProtocol }],
    endpoints: [{ workloadUid: destination.uid, ip: destination.ip, ready: true }],
  };
  const resources: Resource[] = [client, destination].map((w): Resource => ({ kind: 'workload', key: w.uid, version: 1, workload: w }));
  resources.push({ kind: 'service', key: 'shop/cart', version: 1, service });
  const update = { epoch: 'bench', version: 1, snapshot: true, upserts: resources, removals: [] };
  const ca = await createMeshCa();

  const destinationConfig = new ConfigStore('n1');
  destinationConfig.apply(update);
  const destinationMetrics = createMetrics(new Registry());
  const destinationAdmission = new Admission(destinationConfig, destinationMetrics);
  const inbound = await InboundListener.bind({
    config: destinationConfig, certs: await MemoryCertSource.issuing(ca, [spiffe(destination)]), tracker: new ConnectionTracker(destinationMetrics),
    admission: destinationAdmission, host: POD_IP, port: 0,
    http: new HttpInbound(destinationAdmission, destinationMetrics, { requestMetrics: opts.destinationRequestMetrics }),
    destinationOf: (s) => ({ ip: s.localAddress!, port: s.localPort! }),
  });

  const sourceConfig = new ConfigStore('n2');
  sourceConfig.apply(update);
  const metrics = createMetrics(new Registry());
  const pool = new HbonePool({ certs: await MemoryCertSource.issuing(ca, [spiffe(client)]), port: inbound.port });
  const admission = new Admission(sourceConfig, metrics);
  const outbound = await OutboundListener.bind({
    config: sourceConfig, tracker: new ConnectionTracker(metrics), admission, pool, balancer: new LoadBalancer(),
    http: createOutboundHttp({ config: sourceConfig, pool, admission, metrics }), host: '127.0.0.1', port: 0,
    destinationOf: () => ({ ip: '10.96.0.11', port: 80 }),
  });
  return outbound.port;
}
