import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { splice } from './splice.ts';

/**
 * A connected pair of real TCP sockets on loopback: [client side, server side].
 * The client side is half-open unless `halfOpenClient` is false (node's default,
 * as the destination node connects to a pod).
 */
async function socketPair(t: { after(fn: () => void): void }, halfOpenClient = true): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, allowHalfOpen: halfOpenClient });
  const serverSide = await accepted;
  server.close();
  t.after(() => {
    client.destroy();
    serverSide.destroy();
  });
  return [client, serverSide];
}

function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  // Accepted sockets start paused (pauseOnConnect); a 'data' listener alone does not resume them.
  socket.resume();
  return new Promise((resolve, reject) => {
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('splice: 16 MiB each way arrive intact, through a reader that is slower than the writer', async (t) => {
  const [userA, proxyA] = await socketPair(t);
  const [proxyB, userB] = await socketPair(t);
  const closed = new Promise<Error | undefined>((resolve) => splice(proxyA, proxyB, resolve));
  const aToB = randomBytes(16 << 20);
  const bToA = randomBytes(16 << 20);
  // userB does not read until proxyA has been paused (16 MiB is more than the
  // kernel buffers on loopback hold), then reads in bursts. A sample of isPaused()
  // every 10 ms missed short pauses, and bursts from the start let loopback absorb it all.
  let pauses = 0;
  let timer: NodeJS.Timeout | undefined;
  const pause = proxyA.pause.bind(proxyA);
  proxyA.pause = () => {
    pauses++;
    timer ??= setInterval(() => {
      userB.resume();
      setTimeout(() => userB.pause(), 2);
    }, 10);
    return pause();
  };
  t.after(() => clearInterval(timer));
  const atB = collect(userB);
  userB.pause();
  const atA = collect(userA);
  userA.end(aToB);
  userB.end(bToA);
  const [gotB, gotA] = await Promise.all([atB, atA]);
  clearInterval(timer);
  assert.equal(sha256(gotB), sha256(aToB));
  assert.equal(sha256(gotA), sha256(bToA));
  assert.ok(pauses > 0, 'the fast side was paused while the slow reader caught up');
  assert.equal(await closed, undefined);
});

test('splice: a side that ended before the splice (while a tunnel was opened) still half-closes the other', async (t) => {
  const [userA, proxyA] = await socketPair(t);
  const [proxyB, userB] = await socketPair(t);
  userA.end('hello');
  // Read the request and its end before splicing, as detection or a slow dial would.
  const head = new Promise<Buffer>((resolve) => proxyA.once('data', resolve));
  const ended = new Promise((resolve) => proxyA.once('end', resolve));
  proxyA.resume();
  proxyB.write(await head);
  await ended;
  assert.equal(proxyA.readableEnded, true);
  const atB = collect(userB);
  splice(proxyA, proxyB, () => {});
  assert.equal((await atB).toString(), 'hello');
  // The other direction still works after the half-close.
  const atA = collect(userA);
  userB.end('bye');
  assert.equal((await atA).toString(), 'bye');
});

test('splice: an abort on one side destroys the other, and onClosed is called once', async (t) => {
  const [userA, proxyA] = await socketPair(t);
  const [proxyB, userB] = await socketPair(t);
  let calls = 0;
  const closed = new Promise<void>((resolve) => splice(proxyA, proxyB, () => {
    calls++;
    resolve();
  }));
  userA.write('partial');
  userA.resetAndDestroy();
  // userB sees its peer (proxyB) go away.
  const userBEnded = new Promise<void>((resolve) => userB.on('end', () => resolve()));
  userB.on('error', () => {});
  userB.resume();
  await closed;
  await userBEnded;
  assert.equal(proxyB.destroyed, true);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 1);
});

test('regression: data for a side that closed resets the sender, as TCP does (it was dropped unseen and the sender waited for ever)', async (t) => {
  const [userA, proxyA] = await socketPair(t);
  // The destination node's connection to a pod: not half-open.
  const [proxyB, pod] = await socketPair(t, false);
  const spliceClosed = new Promise<void>((resolve) => splice(proxyA, proxyB, () => resolve()));
  const atA = collect(userA);
  const proxyBClosed = new Promise((resolve) => proxyB.once('close', resolve));
  // The pod closes its idle connection: the user sees the half-close, the pod's connection is gone.
  pod.end();
  pod.resume();
  assert.equal((await atA).length, 0);
  await proxyBClosed;
  userA.write('a request after the pod left');
  const outcome = await Promise.race([spliceClosed.then(() => 'reset'), new Promise((resolve) => setTimeout(resolve, 2_000, 'still open after 2 s').unref())]);
  assert.equal(outcome, 'reset');
  // The user's next write meets the reset.
  const failed = new Promise<NodeJS.ErrnoException>((resolve) => userA.once('error', resolve));
  setTimeout(() => userA.write('again'), 50);
  assert.match((await failed).code ?? '', /^(ECONNRESET|EPIPE)$/);
});
