// Errors carry a stable `code` that callers and tests match on, and a message
// that tells the operator what to check. Every code is registered below, with
// what it means, as undici keeps its codes beside its error classes: a code is
// part of the interface (logs, the admin API's error answers, tests), so it is
// spelled once here and a typo fails the typecheck.
//
// The test harness's codes (cluster, demo, end-to-end, benchmarks) are here too:
// `nodemesh demo` runs that harness and prints its errors, and one registry
// answers "what does NM_X mean" for every code anyone sees.

export const ErrorCode = {
  // Shared by every part.
  /** A user- or peer-supplied object failed validation; the message names the object and field. */
  INVALID_OBJECT: 'NM_INVALID_OBJECT',
  /** A caller is not who it claims, or is not allowed what it asks. */
  NOT_AUTHORIZED: 'NM_NOT_AUTHORIZED',
  /** A listener could not bind its address; start-up stops. */
  BIND_FAILED: 'NM_BIND_FAILED',
  /** A mesh peer did not behave: handshake, identity or protocol. */
  PEER: 'NM_PEER',
  /** Not a workload SPIFFE ID, or one outside this mesh's trust domain. */
  BAD_IDENTITY: 'NM_BAD_IDENTITY',
  /** A listen address is not host:port. */
  BAD_ADDRESS: 'NM_BAD_ADDRESS',
  /** A log level other than debug, info, warn or error. */
  BAD_LOG_LEVEL: 'NM_BAD_LOG_LEVEL',
  /** A debug tracer name that is not registered (core/log.ts lists them). */
  UNKNOWN_TRACER: 'NM_UNKNOWN_TRACER',
  /** This Node.js lacks V8's linear-time regular-expression engine, so route regexes cannot run safely. */
  REGEX_ENGINE: 'NM_REGEX_ENGINE',
  /** An unexpected failure with no code of its own (a bug, or an error from a library). */
  INTERNAL: 'NM_INTERNAL',

  // Control plane.
  /** The node-tokens file is malformed, or a token is short or shared by two nodes. */
  BAD_TOKEN_FILE: 'NM_BAD_TOKEN_FILE',
  /** The config directory (--source) cannot be read. */
  BAD_SOURCE: 'NM_BAD_SOURCE',
  /** A config source was started twice. */
  SOURCE_STARTED: 'NM_SOURCE_STARTED',
  /** A Kubernetes API call failed or timed out. */
  KUBE_API: 'NM_KUBE_API',
  /** The kubeconfig names no usable cluster. */
  KUBE_CONFIG: 'NM_KUBE_CONFIG',
  /** The CA's certificate or key is missing, unreadable, mismatched or of the wrong kind. */
  BAD_CA: 'NM_BAD_CA',
  /** A serving certificate was asked for without a host name or IP. */
  BAD_SERVING_HOSTS: 'NM_BAD_SERVING_HOSTS',
  /** A certificate lifetime that is not a positive number of seconds. */
  BAD_TTL: 'NM_BAD_TTL',
  /** The server's trust domain differs from its CA's. */
  TRUST_DOMAIN: 'NM_TRUST_DOMAIN',
  /** The CA root could not be published for the nodes (ConfigMap). */
  TRUST_BUNDLE: 'NM_TRUST_BUNDLE',
  /** A node token could not be reviewed, or the caller's pod not read, through the Kubernetes API. */
  TOKEN_REVIEW_FAILED: 'NM_TOKEN_REVIEW_FAILED',

  // Node agent.
  /** The PEM file of the control plane's CA (--ca-file) cannot be read. */
  CA_FILE: 'NM_CA_FILE',
  /** The node token file cannot be read. */
  TOKEN_FILE: 'NM_TOKEN_FILE',
  /** A control-API call failed; the error carries the gRPC status. */
  CONTROL_PLANE_CALL: 'NM_CONTROL_PLANE_CALL',
  /** iptables-save or iptables-restore could not run or failed. */
  IPTABLES: 'NM_IPTABLES',
  /** The admin API has no endpoint at that path. */
  ADMIN_NO_ENDPOINT: 'NM_ADMIN_NO_ENDPOINT',
  /** The admin endpoint does not accept that method. */
  ADMIN_METHOD: 'NM_ADMIN_METHOD',
  /** A state-changing admin endpoint was called from another host than this node. */
  ADMIN_NOT_LOOPBACK: 'NM_ADMIN_NOT_LOOPBACK',
  /** A WebSocket admin endpoint was called without a WebSocket upgrade. */
  ADMIN_WEBSOCKET: 'NM_ADMIN_WEBSOCKET',
  /** Asked of the data plane on a node that runs none (--no-dataplane). */
  NO_DATAPLANE: 'NM_NO_DATAPLANE',

  // Data plane.
  /** SO_ORIGINAL_DST could not be read from a captured socket. */
  ORIGINAL_DST: 'NM_ORIGINAL_DST',
  /** A pod's network namespace could not be entered (missing mount, no CAP_SYS_ADMIN). */
  NETNS: 'NM_NETNS',
  /** A socket of a pod's listener or transparent connection could not be created inside its namespace. */
  POD_SOCKET: 'NM_POD_SOCKET',
  /** A data-plane worker thread could not start, died, or did not answer the main thread in time. */
  DATA_PLANE_WORKER: 'NM_DATA_PLANE_WORKER',
  /** An explain query names something the config does not have, or is malformed. */
  BAD_EXPLAIN_QUERY: 'NM_BAD_EXPLAIN_QUERY',
  /** --otlp-endpoint is not an http(s) URL the exporter can use. */
  BAD_TRACING: 'NM_BAD_TRACING',
  /** A /tap filter (event, namespace, workload) is malformed or unknown. */
  BAD_TAP_FILTER: 'NM_BAD_TAP_FILTER',

  // The executable.
  /** A command line the executable does not accept. */
  USAGE: 'NM_USAGE',
  /** This build has no demo subcommand. */
  NO_DEMO: 'NM_NO_DEMO',
  /** An operator command could not reach a node's admin API (directly, or through a Kubernetes port-forward). */
  ADMIN_UNREACHABLE: 'NM_ADMIN_UNREACHABLE',
  /** A node's admin API answered an operator command with an error, or with what is not JSON. */
  ADMIN_ANSWER: 'NM_ADMIN_ANSWER',

  // Test harness: the network-namespace cluster, the demo, end-to-end tests, benchmarks.
  /** A command of the test cluster (ip, iptables, a process in a namespace) failed. */
  CLUSTER_COMMAND: 'NM_CLUSTER_COMMAND',
  /** The cluster's run prefix tag is not lower-case letters. */
  CLUSTER_PREFIX: 'NM_CLUSTER_PREFIX',
  /** A process of the test cluster exited, or did not print what it should, in time. */
  CLUSTER_PROCESS: 'NM_CLUSTER_PROCESS',
  /** A node, pod, service or namespace the test asked for is not in the cluster. */
  CLUSTER_LOOKUP: 'NM_CLUSTER_LOOKUP',
  /** The cluster was already torn down. */
  CLUSTER_GONE: 'NM_CLUSTER_GONE',
  /** The cluster could not be set up. */
  CLUSTER_SETUP: 'NM_CLUSTER_SETUP',
  /** The mesh (control plane and node agents) did not start on the test cluster. */
  MESH_START: 'NM_MESH_START',
  /** The image could not be built, or a container of it run, by the image tests. */
  IMAGE_TEST: 'NM_IMAGE_TEST',
  /** The demo config (examples/demo) lacks what the demo needs. */
  DEMO_CONFIG: 'NM_DEMO_CONFIG',
  /** A demo node did not capture its enrolled pods in time. */
  DEMO_CAPTURE: 'NM_DEMO_CAPTURE',
  /** A demo node's admin API could not be read. */
  DEMO_NODE_API: 'NM_DEMO_NODE_API',
  /** A request of an end-to-end test failed or answered unexpectedly. */
  E2E_REQUEST: 'NM_E2E_REQUEST',
  /** An end-to-end test waited too long for a condition. */
  E2E_TIMEOUT: 'NM_E2E_TIMEOUT',
  /** A packet capture file cannot be read. */
  PCAP: 'NM_PCAP',
  /** The scale benchmark did not see what it waited for in time. */
  BENCH_SCALE: 'NM_BENCH_SCALE',
  /** A load-generating tool of the benchmarks failed. */
  BENCH_TOOL: 'NM_BENCH_TOOL',
} as const;

export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode];

export class NodemeshError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A user- or peer-supplied object failed validation; names the object and field. */
export class InvalidObjectError extends NodemeshError {
  readonly object: string;
  readonly field: string;
  constructor(object: string, field: string, reason: string) {
    super(ErrorCode.INVALID_OBJECT, `${object}: ${field}: ${reason}`);
    this.object = object;
    this.field = field;
  }
}

/** A caller is not who it claims, or is not allowed what it asks. */
export class NotAuthorizedError extends NodemeshError {
  constructor(message: string) {
    super(ErrorCode.NOT_AUTHORIZED, message);
  }
}

/** A listener could not bind: start-up stops. */
export class BindError extends NodemeshError {
  constructor(what: string, address: string, cause: unknown) {
    super(ErrorCode.BIND_FAILED, `${what}: cannot listen on ${address}: ${(cause as Error)?.message ?? cause}`, { cause });
  }
}

/** A mesh peer did not behave: handshake, identity or protocol. */
export class PeerError extends NodemeshError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.PEER, message, options);
  }
}
