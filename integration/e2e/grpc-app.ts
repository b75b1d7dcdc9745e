// gRPC server and client for L7 end-to-end tests, real @grpc/grpc-js over
// greeter.proto.
//   node grpc-app.ts serve PORT POD   prints "listening on PORT" once bound
//   node grpc-app.ts call HOST:PORT   makes the calls below, prints one JSON object
//   node grpc-app.ts many HOST:PORT N METHOD [METADATA_JSON]
//                                     N calls of METHOD (SayHello, CountTo or any
//                                     other name of the service), 50 at a time;
//                                     prints the tally of pods, codes, and what
//                                     each pod saw of the x- request metadata
// SayHello answers "hello NAME from POD" with trailers x-served-by and x-seen (the
// test headers of the request, as JSON), or NOT_FOUND (with trailer x-detail) for
// the name "missing". CountTo streams 1..to with trailer x-count (and x-served-by),
// or fails with RESOURCE_EXHAUSTED after fail_after replies; the server prints
// "served CountTo to=N" for each, so a test sees calls whose answers nobody reads.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

interface HelloReply { message: string }
interface CountReply { n: number; pod: string }
type Callback = (err: grpc.ServiceError | null, res?: HelloReply) => void;
type Unary = ((req: object, cb: Callback) => grpc.ClientUnaryCall) & ((req: object, md: grpc.Metadata, cb: Callback) => grpc.ClientUnaryCall);
type Streaming = (req: object, md?: grpc.Metadata) => grpc.ClientReadableStream<CountReply>;
interface GreeterClient extends grpc.Client { SayHello: Unary; CountTo: Streaming }

const definition = protoLoader.loadSync(fileURLToPath(new URL('./greeter.proto', import.meta.url)), { keepCase: true });
const Greeter = (grpc.loadPackageDefinition(definition) as unknown as { nodemesh: { test: { Greeter: grpc.ServiceClientConstructor } } }).nodemesh.test.Greeter;

const [mode, where, pod = 'unknown'] = process.argv.slice(2);

function metadata(pairs: Record<string, string>): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(pairs)) m.set(k, v);
  return m;
}

/** The request metadata the tests set or have routes set, as a call carried it. */
const SEEN = ['x-test', 'x-set', 'x-add', 'x-remove', 'x-backend'];

/** The metadata of SEEN a call carried, each name's values joined with ",". */
function seen(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, values] of Object.entries(md.toJSON())) if (SEEN.includes(name)) out[name] = values.map(String).join(',');
  return out;
}

function serve(port: number): void {
  const server = new grpc.Server();
  server.addService(Greeter.service, {
    SayHello(call: grpc.ServerUnaryCall<{ name: string }, HelloReply>, callback: grpc.sendUnaryData<HelloReply>) {
      if (call.request.name === 'missing') {
        return callback({ code: grpc.status.NOT_FOUND, details: 'no greeting for missing', metadata: metadata({ 'x-detail': 'asked for missing' }) });
      }
      callback(null, { message: `hello ${call.request.name} from ${pod}` }, metadata({ 'x-served-by': pod, 'x-seen': JSON.stringify(seen(call.metadata)) }));
    },
    CountTo(call: grpc.ServerWritableStream<{ to: number; fail_after: number }, CountReply>) {
      const { to, fail_after: failAfter } = call.request;
      console.log(`served CountTo to=${to}`);
      for (let n = 1; n <= to; n++) {
        if (failAfter > 0 && n > failAfter) {
          return call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `stopped after ${failAfter}`, metadata: metadata({ 'x-stopped': String(failAfter) }) });
        }
        call.write({ n, pod });
      }
      call.end(metadata({ 'x-count': String(to), 'x-served-by': pod }));
    },
  });
  server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    console.log(`listening on ${port}`);
  });
  process.on('SIGTERM', () => process.exit(0));
}

interface Outcome {
  code: number;
  details: string;
  trailers: Record<string, unknown>;
  message?: string;
  replies?: number[];
}

function unary(client: GreeterClient, name: string): Promise<Outcome> {
  return new Promise((resolve) => {
    let message: string | undefined;
    const call = client.SayHello({ name }, (_err, res) => (message = res?.message));
    call.on('status', (s: grpc.StatusObject) => setImmediate(() => resolve({ code: s.code, details: s.details, trailers: s.metadata.getMap(), message })));
  });
}

function streaming(client: GreeterClient, to: number, failAfter: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const replies: number[] = [];
    const call = client.CountTo({ to, fail_after: failAfter });
    call.on('data', (r: CountReply) => replies.push(r.n));
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, trailers: s.metadata.getMap(), replies }));
  });
}

async function call(target: string): Promise<void> {
  const client = new Greeter(target, grpc.credentials.createInsecure()) as unknown as GreeterClient;
  const result = {
    hello: await unary(client, 'client'),
    missing: await unary(client, 'missing'),
    count: await streaming(client, 5, 0),
    broken: await streaming(client, 5, 2),
  };
  console.log(JSON.stringify(result));
  client.close();
}

interface Tally {
  calls: number;
  /** By x-served-by ("" when no pod answered). */
  pods: Record<string, number>;
  codes: Record<string, number>;
  /** Per pod: every distinct x-seen it answered with. */
  seen: Record<string, string[]>;
  /** Details of the calls that did not succeed, distinct. */
  details: string[];
}

async function many(target: string, n: number, method: string, md: Record<string, string>): Promise<void> {
  const client = new Greeter(target, grpc.credentials.createInsecure()) as unknown as GreeterClient;
  const tally: Tally = { calls: 0, pods: {}, codes: {}, seen: {}, details: [] };
  const one = (): Promise<void> => new Promise((resolve) => {
    let pod = '';
    let seenBy = '';
    const done = (s: grpc.StatusObject) => {
      pod ||= String(s.metadata.get('x-served-by')[0] ?? '');
      seenBy ||= String(s.metadata.get('x-seen')[0] ?? '');
      tally.calls++;
      tally.pods[pod] = (tally.pods[pod] ?? 0) + 1;
      tally.codes[s.code] = (tally.codes[s.code] ?? 0) + 1;
      if (seenBy && !(tally.seen[pod] ??= []).includes(seenBy)) tally.seen[pod]!.push(seenBy);
      if (s.code !== 0 && !tally.details.includes(s.details)) tally.details.push(s.details);
      resolve();
    };
    if (method === 'CountTo') {
      const call = client.CountTo({ to: 2, fail_after: 0 }, metadata(md));
      call.on('data', (r: CountReply) => (pod = r.pod));
      call.on('error', () => {});
      call.on('status', done);
    } else if (method === 'SayHello') {
      const call = client.SayHello({ name: 'many' }, metadata(md), () => {});
      call.on('status', (s: grpc.StatusObject) => setImmediate(() => done(s)));
    } else {
      // A method the service does not have: the path alone decides who answers.
      const call = client.makeUnaryRequest(`/nodemesh.test.Greeter/${method}`, () => Buffer.alloc(0), (b: Buffer) => b, {}, metadata(md), () => {});
      call.on('status', (s: grpc.StatusObject) => setImmediate(() => done(s)));
    }
  });
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: Math.min(50, n) }, worker));
  console.log(JSON.stringify(tally));
  client.close();
}

if (mode === 'serve' && where) serve(Number(where));
else if (mode === 'many' && where) await many(where, Number(process.argv[4] ?? 1), process.argv[5] ?? 'SayHello', JSON.parse(process.argv[6] ?? '{}') as Record<string, string>);
else if (mode === 'call' && where) await call(where);
else {
  console.error('usage: grpc-app.ts serve PORT POD | call HOST:PORT | many HOST:PORT N METHOD [METADATA_JSON]');
  process.exit(64);
}
