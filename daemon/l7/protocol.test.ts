import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Service, ServicePort } from '../../core/types.ts';
import { ConfigStore } from '../config-store.ts';
import { applyConfig, workload } from '../testdata/mesh-fixture.ts';
import { destinationProtocol, servicePortProtocol } from './protocol.ts';

const port = (name: string, appProtocol = '', number = 80): ServicePort => ({ name, port: number, targetPort: 8080, targetPortName: '', appProtocol });
const service = (ports: ServicePort[], opaquePorts: number[] = []): Service => ({
  namespace: 'shop', name: 'cart', vips: ['10.96.0.10'], ports, endpoints: [{ workloadUid: 'uid-cart', ip: '10.1.0.5', ready: true }], opaquePorts,
});

test('appProtocol decides first, then the port name; opaque ports are never parsed', () => {
  const p = (sp: ServicePort, opaque: number[] = []) => servicePortProtocol(service([sp], opaque), sp);
  assert.equal(p(port('web', 'http')), 'http');
  assert.equal(p(port('web', 'kubernetes.io/h2c')), 'http2');
  assert.equal(p(port('web', 'grpc')), 'http2');
  assert.equal(p(port('http-api', 'tcp')), 'opaque', 'appProtocol wins over the name');
  assert.equal(p(port('http')), 'http');
  assert.equal(p(port('http-metrics')), 'http');
  assert.equal(p(port('http2-api')), 'http2');
  assert.equal(p(port('grpc-api')), 'http2');
  assert.equal(p(port('httpx')), 'detect', 'a prefix means a whole word, as Istio reads it');
  assert.equal(p(port('web')), 'detect');
  assert.equal(p(port('')), 'detect');
  assert.equal(p(port('http', 'http'), [80]), 'opaque', 'nodemesh.io/opaque-ports wins over every declaration');
});

test('destinationProtocol: a VIP port as declared, a pod port as declared by the Services that target it', () => {
  const config = new ConfigStore('n1');
  applyConfig(config, {
    workloads: [workload('cart', '10.1.0.5', 'n1')],
    services: [service([port('http', '', 80), { ...port('db', '', 5432), targetPort: 5432 }], [5432])],
  });
  assert.equal(destinationProtocol(config, '10.96.0.10', 80), 'http');
  assert.equal(destinationProtocol(config, '10.96.0.10', 5432), 'opaque');
  assert.equal(destinationProtocol(config, '10.96.0.10', 81), 'detect');
  assert.equal(destinationProtocol(config, '10.1.0.5', 8080), 'http', 'target port of the http Service port');
  assert.equal(destinationProtocol(config, '10.1.0.5', 5432), 'opaque');
  assert.equal(destinationProtocol(config, '10.1.0.5', 9999), 'detect');
  assert.equal(destinationProtocol(config, '192.0.2.1', 80), 'detect', 'outside the mesh');
});
