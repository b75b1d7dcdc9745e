import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TRACERS, debug, enabledTracers, parseTracerList, setTracers } from './log.ts';

/** Loads log.ts in a fresh process with that NODEMESH_DEBUG; answers its stderr lines and enabled tracers. */
function startWith(nodemeshDebug: string): { stderr: string[]; enabled: string[] } {
  const script = `import(${JSON.stringify(new URL('./log.ts', import.meta.url).href)}).then((m) => console.log(JSON.stringify(m.enabledTracers())))`;
  const res = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, NODEMESH_DEBUG: nodemeshDebug, NODEMESH_LOG_LEVEL: 'info' }, encoding: 'utf8' });
  assert.equal(res.status, 0, res.stderr);
  return { stderr: res.stderr.split('\n').filter(Boolean), enabled: JSON.parse(res.stdout) };
}

test('NODEMESH_DEBUG: unknown names are reported once on stderr, naming the known ones; the known ones are enabled', () => {
  const { stderr, enabled } = startWith('hbone, nope,config,,also-nope');
  assert.deepEqual(enabled, ['hbone', 'config']);
  assert.equal(stderr.length, 1, stderr.join('\n'));
  const line = JSON.parse(stderr[0]!);
  assert.equal(line.level, 'warn');
  assert.equal(line.msg, 'NODEMESH_DEBUG: unknown tracers "nope", "also-nope"; known: hbone, outbound, inbound, http, config, certs, enrollment (or * for all); ignoring them');
  assert.deepEqual(line.enabled, ['hbone', 'config']);
});

test('NODEMESH_DEBUG: known names and * start silently', () => {
  assert.deepEqual(startWith('*'), { stderr: [], enabled: ['*'] });
  assert.deepEqual(startWith('outbound,inbound,http'), { stderr: [], enabled: ['outbound', 'inbound', 'http'] });
  assert.deepEqual(startWith(''), { stderr: [], enabled: [] });
});

test('setTracers refuses an unregistered name and keeps the tracers it had', (t) => {
  const before = enabledTracers();
  t.after(() => setTracers(before));
  setTracers(['certs']);
  assert.throws(() => setTracers(['certs', 'outbund']), { code: 'NM_UNKNOWN_TRACER', message: /unknown tracer "outbund"; known: hbone, outbound/ });
  assert.deepEqual(enabledTracers(), ['certs']);
  assert.equal(debug('certs').enabled, true);
  assert.equal(debug('hbone').enabled, false);
});

test('every registered tracer has a one-line description, and the list parser sorts names into known and unknown', () => {
  for (const [name, traces] of Object.entries(TRACERS)) assert.match(traces, /^[^\n]{10,80}$/, name);
  assert.deepEqual(parseTracerList(' hbone ,*, x,'), { tracers: ['hbone', '*'], unknown: ['x'] });
  assert.deepEqual(parseTracerList(''), { tracers: [], unknown: [] });
});
