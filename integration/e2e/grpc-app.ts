// gRPC server and client for L7 end-to-end tests, real @grpc/grpc-js over
// greeter.proto.
//   node grpc-app.ts serve PORT POD   prints "listening on PORT" once bound
//   node grpc-app.ts call HOST:PORT   makes the calls below, prints one JSON object
// SayHello answers "hello NAME from POD" with trailer x-served-by, or NOT_FOUND
// (with trailer x-detail) for the name "missing". CountTo streams 1..to with
// trailer x-count, or fails with RESOURCE_EXHAUSTED after fail_after replies.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

interface HelloReply { message: string }
interface CountReply { n: number; pod: string }
type Unary = (req: object, cb: (err: grpc.ServiceError | null, res?: HelloReply) => void) => grpc.ClientUnaryCall;
type Streaming = (req: object) => grpc.ClientReadableStream<CountReply>;
interface GreeterClient extends grpc.Client { SayHello: Unary; CountTo: Streaming }

const definition = protoLoader.loadSync(fileURLToPath(new URL('./greeter.proto', import.meta.url)), { keepCase: true });
const Greeter = (grpc.loadPackageDefinition(definition) as unknown as { nodemesh: { test: { Greeter: grpc.ServiceClientConstructor } } }).nodemesh.test.Greeter;

const [mode, where, pod = 'unknown'] = process.argv.slice(2);

function metadata(pairs: Record<string, string>): grpc.Metadata {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(pairs)) m.set(k, v);
  return m;
}

function serve(port: number): void {
  const server = new grpc.Server();
  server.addService(Greeter.service, {
    SayHello(call: grpc.ServerUnaryCall<{ name: string }, HelloReply>, callback: grpc.sendUnaryData<HelloReply>) {
      if (call.request.name === 'missing') {
        return callback({ code: grpc.status.NOT_FOUND, details: 'no greeting for missing', metadata: metadata({ 'x-detail': 'asked for missing' }) });
      }
      callback(null, { message: `hello ${call.request.name} from ${pod}` }, metadata({ 'x-served-by': pod }));
    },
    CountTo(call: grpc.ServerWritableStream<{ to: number; fail_after: number }, CountReply>) {
      const { to, fail_after: failAfter } = call.request;
      for (let n = 1; n <= to; n++) {
        if (failAfter > 0 && n > failAfter) {
          return call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `stopped after ${failAfter}`, metadata: metadata({ 'x-stopped': String(failAfter) }) });
        }
        call.write({ n, pod });
      }
      call.end(metadata({ 'x-count': String(to) }));
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

if (mode === 'serve' && where) serve(Number(where));
else if (mode === 'call' && where) await call(where);
else {
  console.error('usage: grpc-app.ts serve PORT POD | call HOST:PORT');
  process.exit(64);
}
