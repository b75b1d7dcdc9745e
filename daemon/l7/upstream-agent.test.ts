// The keep-alive agent of one upstream endpoint, on real loopback sockets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { UpstreamAgent, UpstreamConnectError } from './upstream-agent.ts';

test('requests to an endpoint share its connections, whatever each request\'s own options say', async (t) => {
  const server = http.createServer((req, res) => res.end(req.url));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  let opened = 0;
  const agent = new UpstreamAgent(() => {
    opened++;
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
      socket.once('error', reject);
    });
  });
  t.after(() => agent.destroy());
  const get = (path: string, host: string) => new Promise<string>((resolve, reject) => {
    http.get({ host, port: 1, path, agent, setHost: false, headers: { host: 'upstream', 'x-request': path } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  for (let i = 0; i < 5; i++) assert.equal(await get(`/${i}`, `10.0.0.${i}`), `/${i}`);
  assert.equal(opened, 1, 'one connection carried the five requests in turn');
  assert.deepEqual(await Promise.all([get('/a', 'x'), get('/b', 'y')]), ['/a', '/b']);
  assert.equal(opened, 2, 'two requests at once: a second connection');
  assert.equal(Object.keys(agent.freeSockets).length, 1, 'one pool for the endpoint');
});

test('a failed connect is an UpstreamConnectError on the request', async (t) => {
  const agent = new UpstreamAgent(() => Promise.reject(new Error('no route to the pod')));
  t.after(() => agent.destroy());
  const err = await new Promise<Error>((resolve) => {
    http.get({ host: 'x', port: 1, path: '/', agent }, () => resolve(new Error('answered'))).on('error', resolve);
  });
  assert.ok(err instanceof UpstreamConnectError, err.message);
  assert.match(err.message, /no route to the pod/);
});
