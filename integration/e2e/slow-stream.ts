// A slow gRPC server stream for the rolling-upgrade test, real @grpc/grpc-js
// with JSON messages (a generic service definition, no .proto needed):
//   node slow-stream.ts serve PORT           prints "listening on PORT"
//   node slow-stream.ts call HOST:PORT N MS [DEADLINE_MS]  reads N replies sent MS apart within a gRPC
//                                            deadline (default 60 s), prints {code, details, replies}
import * as grpc from '@grpc/grpc-js';

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
};
const service = {
  count: {
    path: '/nodemesh.test.Slow/Count', requestStream: false, responseStream: true,
    requestSerialize: json.serialize, requestDeserialize: json.deserialize,
    responseSerialize: json.serialize, responseDeserialize: json.deserialize,
  },
} satisfies grpc.ServiceDefinition;

const [mode, where, n = '10', ms = '100', deadlineMs = '60000'] = process.argv.slice(2);

if (mode === 'serve') {
  const server = new grpc.Server();
  server.addService(service, {
    count(call: grpc.ServerWritableStream<{ n: number; ms: number }, { i: number }>) {
      let i = 0;
      const timer = setInterval(() => {
        if (call.cancelled) return clearInterval(timer);
        call.write({ i: ++i });
        if (i >= call.request.n) {
          clearInterval(timer);
          call.end();
        }
      }, call.request.ms);
    },
  });
  server.bindAsync(`0.0.0.0:${where}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    console.log(`listening on ${where}`);
  });
  process.on('SIGTERM', () => process.exit(0));
} else {
  const Client = grpc.makeGenericClientConstructor(service, 'Slow');
  const client = new Client(where!, grpc.credentials.createInsecure()) as unknown as grpc.Client & { count(req: object, options: grpc.CallOptions): grpc.ClientReadableStream<{ i: number }> };
  const replies: number[] = [];
  const call = client.count({ n: Number(n), ms: Number(ms) }, { deadline: Date.now() + Number(deadlineMs) });
  call.on('data', (r: { i: number }) => replies.push(r.i));
  call.on('error', () => {});
  call.on('status', (s: grpc.StatusObject) => {
    console.log(JSON.stringify({ code: s.code, details: s.details, replies: replies.length }));
    client.close();
  });
}
