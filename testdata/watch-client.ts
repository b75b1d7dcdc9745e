// A node's first look at a running control plane, for tests that start one:
// one Watch call over TLS with a bearer token, cancelled after its first
// message (the snapshot).

import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { CONTROL_PLANE_TLS_NAME, meshService, type WireUpdate } from '../core/wire.ts';

type MeshClient = grpc.Client & { Watch(req: { node: string }, md: grpc.Metadata): grpc.ClientReadableStream<WireUpdate> };

/**
 * The first Watch message for `node`, authenticated with `token`; `serverName`
 * is the name the serving certificate is checked for: by default the one the
 * agent checks when it dials an IP address, as tests do (an IP address is no
 * TLS ServerName, RFC 6066).
 */
export async function firstWatchMessage(address: string, caPem: Buffer, node: string, token: string, serverName = CONTROL_PLANE_TLS_NAME): Promise<WireUpdate> {
  const Mesh = meshService();
  const options = { 'grpc.ssl_target_name_override': serverName };
  const client = new Mesh(address, grpc.credentials.createSsl(caPem), options) as unknown as MeshClient;
  try {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const stream = client.Watch({ node }, md);
    const [message] = (await once(stream, 'data')) as [WireUpdate];
    // Cancelling ends the call with CANCELLED, which is expected here.
    stream.on('error', (err: grpc.ServiceError) => assert.equal(err.code, grpc.status.CANCELLED));
    stream.cancel();
    return message;
  } finally {
    client.close();
  }
}
