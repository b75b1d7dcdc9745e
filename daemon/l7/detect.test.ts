import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { classify, detectProtocol, H2_PREFACE } from './detect.ts';

test('classify: HTTP/1 request lines, the HTTP/2 preface, and bytes that cannot be either', () => {
  const c = (s: string | Buffer) => classify(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
  assert.equal(c('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'http1');
  assert.equal(c('POST /api?x=1 HTTP/1.0\r\n'), 'http1');
  assert.equal(c('PROPFIND /dav HTTP/1.1\r\n'), 'http1');
  assert.equal(c(H2_PREFACE), 'http2');
  assert.equal(c(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4])])), 'http2');
  for (const partial of ['', 'G', 'GET', 'GET ', 'GET /pa', 'GET /path HTTP/1', 'GET /path HTTP/1.1\r', 'P', 'PRI * HTTP/2.0\r\n']) {
    assert.equal(c(partial), 'more', JSON.stringify(partial));
  }
  for (const other of ['\x16\x03\x01\x02\x00', 'get / HTTP/1.1\r\n', 'SSH-2.0-OpenSSH\r\n', 'GET / HTTP/2.0\r\n', 'GET /a b HTTP/1.1\r\n', 'GET\r\n', '*1\r\n$4\r\nPING\r\n', 'GET / FTP', 'AVERYLONGMETHODNAMEOVER24CHARS']) {
    assert.equal(c(other), 'opaque', JSON.stringify(other));
  }
  assert.equal(c('GET /' + 'a'.repeat(17 * 1024)), 'opaque', 'an endless request line is not waited for');
});

async function pair(t: import('node:test').TestContext): Promise<{ server: net.Socket; client: net.Socket }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  t.after(() => listener.close());
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as AddressInfo).port, '127.0.0.1');
  const server = await accepted;
  t.after(() => {
    client.destroy();
    server.destroy();
  });
  return { server, client };
}

test('a server-speaks-first client is carried as opaque after the timeout, not later', async (t) => {
  const { server } = await pair(t);
  const started = performance.now();
  const d = await detectProtocol(server, 100);
  const elapsed = performance.now() - started;
  assert.equal(d.protocol, 'opaque');
  assert.equal(d.head.length, 0);
  assert.ok(elapsed >= 95 && elapsed < 400, `decided after ${elapsed} ms`);
});

test('detection decides on the first bytes without waiting, and leaves them for the reader', async (t) => {
  const { server, client } = await pair(t);
  client.write('GET /x HT');
  setTimeout(() => client.write('TP/1.1\r\nHost: a\r\n\r\n'), 20);
  const started = performance.now();
  const d = await detectProtocol(server, 5_000);
  assert.equal(d.protocol, 'http1');
  assert.ok(performance.now() - started < 1_000);
  assert.match(d.head.toString(), /^GET \/x HTTP\/1.1\r\n/);
  assert.ok(server.isPaused(), 'nothing more is read until the caller takes over');

  const other = await pair(t);
  other.client.write(Buffer.from([0x16, 0x03, 0x01]));
  const tls = await detectProtocol(other.server, 5_000);
  assert.equal(tls.protocol, 'opaque', 'a TLS ClientHello is opaque at once');
  assert.deepEqual([...tls.head], [0x16, 0x03, 0x01]);
});

test('a client that closes before anything conclusive is opaque with what it sent', async (t) => {
  const { server, client } = await pair(t);
  client.end('GE');
  const d = await detectProtocol(server, 5_000);
  assert.equal(d.protocol, 'opaque');
  assert.equal(d.head.toString(), 'GE');
});
