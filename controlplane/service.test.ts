import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toService } from './service.ts';
import { toEndpointSlice } from './endpoint-slice.ts';
import type { KubeObject } from './source.ts';
import { InvalidObjectError } from '../core/errors.ts';

function svc(spec: Record<string, unknown>, annotations?: Record<string, string>): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: 'server', namespace: 'demo', annotations }, spec };
}

test('a Service converts with VIPs, ports, target ports and opaque ports', () => {
  const { service, selector } = toService(svc({
    clusterIP: '10.96.0.10',
    selector: { app: 'server' },
    ports: [
      { name: 'tcp-echo', port: 80, targetPort: 7000 },
      { name: 'http', port: 8080, targetPort: 'http', appProtocol: 'http' },
      { name: 'same', port: 9000 },
      { name: 'str', port: 9001, targetPort: '9002' },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
  }, { 'nodemesh.io/opaque-ports': '3306, 5432' }));
  assert.deepEqual(selector, { app: 'server' });
  assert.deepEqual(service, {
    namespace: 'demo', name: 'server', vips: ['10.96.0.10'], endpoints: [], opaquePorts: [3306, 5432],
    ports: [
      { name: 'tcp-echo', port: 80, targetPort: 7000, targetPortName: '', appProtocol: '' },
      { name: 'http', port: 8080, targetPort: 0, targetPortName: 'http', appProtocol: 'http' },
      { name: 'same', port: 9000, targetPort: 9000, targetPortName: '', appProtocol: '' },
      { name: 'str', port: 9001, targetPort: 9002, targetPortName: '', appProtocol: '' },
    ],
  });
});

test('dual-stack clusterIPs, headless and selector-less Services', () => {
  assert.deepEqual(toService(svc({ clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00::1'] })).service.vips, ['10.96.0.1', 'fd00::1']);
  assert.deepEqual(toService(svc({ clusterIP: 'None', selector: { app: 'x' } })).service.vips, []);
  assert.equal(toService(svc({ clusterIP: '10.96.0.2' })).selector, null);
  assert.equal(toService(svc({ clusterIP: '10.96.0.2', selector: {} })).selector, null);
});

function invalid(object: KubeObject, field: string, reason: RegExp, convert: (o: KubeObject) => unknown = toService): void {
  assert.throws(() => convert(object), (err: unknown) => {
    assert.ok(err instanceof InvalidObjectError, String(err));
    assert.equal(err.field, field);
    assert.match(err.message, reason);
    assert.match(err.object, /^(Service demo\/server|EndpointSlice demo\/server-abc)$/);
    return true;
  });
}

test('invalid Service fields are errors naming the field', () => {
  invalid(svc({ clusterIP: '10.96.0.300' }), 'spec.clusterIP', /not an IP address/);
  invalid(svc({ clusterIPs: ['10.96.0.1', 'x'] }), 'spec.clusterIPs[1]', /not an IP address/);
  invalid(svc({ ports: [{ name: 'a' }] }), 'spec.ports[0].port', /required/);
  invalid(svc({ ports: [{ port: 0 }] }), 'spec.ports[0].port', /between 1 and 65535/);
  invalid(svc({ ports: [{ port: 80, targetPort: 70000 }] }), 'spec.ports[0].targetPort', /between 1 and 65535/);
  invalid(svc({ ports: [{ port: 80, protocol: 'HTTP' }] }), 'spec.ports[0].protocol', /TCP, UDP, SCTP/);
  invalid(svc({ selector: { app: 3 } }), 'spec.selector.app', /must be a string/);
  invalid(svc({}, { 'nodemesh.io/opaque-ports': '3306,mysql' }), 'metadata.annotations["nodemesh.io/opaque-ports"]', /port numbers, got "mysql"/);
  invalid(svc({}, { 'nodemesh.io/opaque-ports': '99999' }), 'metadata.annotations["nodemesh.io/opaque-ports"]', /between 1 and 65535/);
});

function slice(extra: Record<string, unknown>, labels: Record<string, string> = { 'kubernetes.io/service-name': 'server' }): KubeObject {
  return { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'server-abc', namespace: 'demo', labels }, addressType: 'IPv4', ...extra };
}

test('an EndpointSlice lists its endpoints with readiness and pod uid', () => {
  const s = toEndpointSlice(slice({
    endpoints: [
      { addresses: ['10.244.2.10'], conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'server-a', uid: 'u-a' } },
      { addresses: ['10.244.2.11'], conditions: { ready: false } },
      { addresses: ['10.244.2.12'] },
    ],
  }));
  assert.deepEqual(s, {
    namespace: 'demo', serviceName: 'server',
    endpoints: [{ ip: '10.244.2.10', ready: true, podUid: 'u-a' }, { ip: '10.244.2.11', ready: false, podUid: '' }, { ip: '10.244.2.12', ready: true, podUid: '' }],
  });
});

test('invalid EndpointSlice fields are errors naming the field', () => {
  invalid(slice({}, {}), 'metadata.labels["kubernetes.io/service-name"]', /required/, toEndpointSlice);
  invalid(slice({ endpoints: [{ addresses: ['nope'] }] }), 'endpoints[0].addresses[0]', /not an IP address/, toEndpointSlice);
  invalid(slice({ addressType: 'IPv5' }), 'addressType', /IPv4, IPv6, FQDN/, toEndpointSlice);
});

test('an EndpointSlice readiness that is not a boolean is an error, not "ready"', () => {
  invalid(slice({ endpoints: [{ addresses: ['10.244.2.10'], conditions: { ready: 'false' } }] }), 'endpoints[0].conditions.ready', /must be true or false/, toEndpointSlice);
  invalid({ ...svc({}), metadata: { name: 'server', namespace: 'demo', annotations: ['x'] as never } }, 'metadata.annotations', /must be an object, got a list/);
});
