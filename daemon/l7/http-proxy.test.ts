import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const HTTP_PROXY = fileURLToPath(new URL('./http-proxy.ts', import.meta.url));

// In a process of its own: a deprecation warning is printed once per process.
const SCRIPT = `
import http from 'node:http';
import util from 'node:util';
const { default: httpProxy } = await import(${JSON.stringify(HTTP_PROXY)});
const target = http.createServer((req, res) => res.end('hello')).listen(0, '127.0.0.1');
await new Promise((r) => target.once('listening', r));
const proxy = httpProxy.createProxyServer({});
const front = http.createServer((req, res) => proxy.web(req, res, { target: { host: '127.0.0.1', port: target.address().port } })).listen(0, '127.0.0.1');
await new Promise((r) => front.once('listening', r));
const body = await (await fetch('http://127.0.0.1:' + front.address().port + '/')).text();
await new Promise((r) => setTimeout(r, 50));
process.stderr.write('proxied: ' + body + '\\n');
util._extend({}, { a: 1 });
await new Promise((r) => setTimeout(r, 50));
process.exit(0);
`;

test('http-proxy proxies without the util._extend deprecation warning, and util._extend still warns any other caller', async () => {
  const { stderr } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', SCRIPT]);
  const [before, after] = stderr.split('proxied: hello\n');
  assert.notEqual(after, undefined, `the request went through the proxy:\n${stderr}`);
  assert.doesNotMatch(before!, /DeprecationWarning/, 'nothing warned while http-proxy loaded and proxied');
  assert.match(after!, /\[DEP0060\] DeprecationWarning: The `util._extend` API is deprecated/);
});
