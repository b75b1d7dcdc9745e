// The keep-alive agent of one upstream endpoint, on real loopback sockets.

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { splice } from '../splice.ts';
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

/**
 * An agent whose connections are HBONE-like tunnels to `pod`: CONNECT streams on
 * HTTP/2 to a destination node in miniature, which splices each to the pod as the
 * inbound side does.
 */
async function tunnelledAgent(t: TestContext, pod: http.Server) {
  await new Promise<void>((resolve) => pod.listen(0, '127.0.0.1', resolve));
  const podPort = (pod.address() as AddressInfo).port;
  const node = http2.createServer();
  const sessions: http2.ServerHttp2Session[] = [];
  node.on('session', (s) => sessions.push(s));
  node.on('stream', (stream) => {
    const socket = net.connect(podPort, '127.0.0.1', () => {
      stream.respond({ ':status': 200 });
      splice(stream, socket, () => {});
    });
    socket.on('error', () => stream.destroy());
  });
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sessions) s.destroy();
    node.close();
    pod.closeAllConnections();
    pod.close();
  });
  let client: http2.ClientHttp2Session | undefined;
  const tunnels: http2.ClientHttp2Stream[] = [];
  const agent = new UpstreamAgent(async () => {
    if (!client || client.closed) client = http2.connect(`http://127.0.0.1:${(node.address() as AddressInfo).port}`);
    const stream = client.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${podPort}` });
    tunnels.push(stream);
    await new Promise<void>((resolve, reject) => stream.once('response', () => resolve()).once('error', reject));
    return stream;
  });
  t.after(() => {
    agent.destroy();
    client?.destroy();
  });
  const get = (path: string) => new Promise<string>((resolve, reject) => {
    http.get({ host: 'pod', port: 1, path, agent }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  return { get, sessions, tunnels, client: () => client! };
}

test('a tunnel whose session the destination drains (GOAWAY) takes no further request: idle or busy, the next request opens a tunnel on a new session', async (t) => {
  const pod = http.createServer((req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 100);
    else res.end(req.url);
  });
  const { get, sessions, tunnels, client } = await tunnelledAgent(t, pod);
  assert.deepEqual(await Promise.all([get('/a'), get('/b')]), ['/a', '/b']);
  assert.equal(tunnels.length, 2);
  const slow = get('/slow');
  await new Promise((resolve) => setTimeout(resolve, 20));
  // The destination drains: GOAWAY, its open streams may finish.
  sessions[0]!.close();
  await new Promise<void>((resolve) => client().once('goaway', () => resolve()));
  assert.equal(await get('/after'), '/after', 'the idle tunnel of the drained session was not used');
  assert.equal(await slow, 'slow', 'the busy tunnel finished its response');
  assert.equal(await get('/later'), '/later');
  assert.equal(sessions.length, 2, 'the requests after GOAWAY went over a new session');
  assert.equal(tunnels.length, 3, 'one new tunnel carried both: the busy old one was not pooled again');
});

test('regression: a tunnel whose pod closed the idle keep-alive connection behind it is not pooled (a request on it was never answered)', async (t) => {
  // node's default keep-alive timeout is 5 s; this pod's 2.5 s (it tells clients `keep-alive: timeout=2`:
  // under a second, node's agent would not pool the connection at all).
  const pod = http.createServer({ keepAliveTimeout: 2_500 }, (req, res) => res.end(req.url));
  const { get, tunnels } = await tunnelledAgent(t, pod);
  assert.equal(await get('/first'), '/first');
  // As on a busy node, the idle tunnel is read (flowing): the pod's FIN arrives as its end.
  tunnels[0]!.resume();
  while (!tunnels[0]!.readableEnded) await new Promise((resolve) => setTimeout(resolve, 20));
  const after = await Promise.race([get('/after'), new Promise<string>((resolve) => setTimeout(resolve, 3_000, 'no answer in 3 s').unref())]);
  assert.equal(after, '/after');
  assert.equal(tunnels.length, 2, 'the request went over a new tunnel');
});
