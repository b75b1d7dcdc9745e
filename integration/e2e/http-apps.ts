// HTTP programs in pods for L7 tests: the http-app server (delays, byte counts),
// and http-client.ts driven from the test: requests on one held keep-alive
// connection, each answered as it arrives, so a test can keep a request in
// flight while it changes the mesh and then send the next one on the same
// connection.

import { fileURLToPath } from 'node:url';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import type { Cluster } from '../cluster/cluster.ts';
import type { ClusterProcess } from '../cluster/processes.ts';

const HTTP_CLIENT = fileURLToPath(new URL('./http-client.ts', import.meta.url));
const HTTP_APP = fileURLToPath(new URL('./http-app.ts', import.meta.url));

/** Starts http-app.ts in a pod, answering as the pod's name; `log`: it prints a line per request it serves. */
export async function startHttpApp(cluster: Cluster, podRef: string, port: number, opts: { log?: boolean } = {}): Promise<ClusterProcess> {
  const pod = cluster.pod(podRef);
  const proc = cluster.spawn(pod.netns, [process.execPath, HTTP_APP, String(port), pod.name, ...(opts.log ? ['log'] : [])]);
  await proc.waitForOutput('listening');
  return proc;
}

export interface HttpAsk {
  method?: string;
  path: string;
  headers?: Record<string, string>;
}

export interface HttpAnswer {
  id: string;
  /** 0 when the request failed without a response. */
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The client's port: equal ports mean the same connection. */
  localPort: number;
  /** From sending to the end of the response. */
  ms: number;
  error?: string;
}

/** What http-app.ts answers. */
export interface AppEcho {
  pod: string;
  method: string;
  path: string;
  headers: Record<string, string | undefined>;
  bytes: number;
}

export interface HttpSession {
  process: ClusterProcess;
  send(ask: HttpAsk, timeoutMs?: number): Promise<HttpAnswer>;
  close(): Promise<void>;
}

export async function openHttpSession(cluster: Cluster, podRef: string, host: string, port: number): Promise<HttpSession> {
  const proc = cluster.spawn(cluster.pod(podRef).netns, [process.execPath, HTTP_CLIENT, host, String(port)]);
  await proc.waitForOutput('ready');
  let next = 0;
  const answerOf = (id: string): HttpAnswer | undefined => {
    for (const line of proc.stdout.split('\n')) {
      if (!line.startsWith('{')) continue;
      const answer = JSON.parse(line) as HttpAnswer;
      if (answer.id === id) return answer;
    }
    return undefined;
  };
  return {
    process: proc,
    async send(ask, timeoutMs = 10_000) {
      const id = `r${++next}`;
      proc.child.stdin!.write(`${JSON.stringify({ id, ...ask })}\n`);
      await proc.waitForOutput(`"id":"${id}"`, timeoutMs);
      const answer = answerOf(id);
      if (!answer) throw new NodemeshError(ErrorCode.E2E_REQUEST, `http-client printed no answer for ${id} (${ask.method ?? 'GET'} ${ask.path})\n${proc.outputTail()}`);
      return answer;
    },
    async close() {
      proc.child.stdin!.end();
      await proc.stop();
    },
  };
}

/** The JSON http-app.ts answered; throws naming the answer when it is something else. */
export function appEcho(answer: HttpAnswer): AppEcho {
  try {
    return JSON.parse(answer.body) as AppEcho;
  } catch {
    throw new NodemeshError(ErrorCode.E2E_REQUEST, `expected http-app JSON, got status ${answer.status}: ${answer.body.slice(0, 500)}${answer.error ?? ''}`);
  }
}
