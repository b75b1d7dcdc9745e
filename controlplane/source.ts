// A config source delivers raw Kubernetes objects (as parsed from YAML or read
// from the API server) to the mesh model, which validates and converts them.
// Both the file source and the Kubernetes source implement ConfigSource, so the
// model and its tests are shared.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion?: string; kind: string; name: string; uid?: string; controller?: boolean }[];
  creationTimestamp?: string;
  resourceVersion?: string;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
  [field: string]: unknown;
}

/** Where an object came from, for error messages: a file path, or "kubernetes". */
export type Origin = string;

export interface SourceEvents {
  /** An object appeared or changed. */
  upsert(obj: KubeObject, origin: Origin): void;
  /** An object is gone. Namespace is "" for cluster-scoped kinds. */
  remove(kind: string, namespace: string, name: string): void;
  /** Something could not even be parsed into an object (bad YAML, no kind/name), or was not applied (a copy elsewhere wins). */
  invalid(origin: Origin, object: string, error: Error): void;
  /**
   * `origin` is reported again in full, from here on in this tick: what it
   * reported through invalid() before is forgotten. Without this call, that
   * happens at the origin's first event of a tick.
   */
  reread(origin: Origin): void;
  /** The initial state has been delivered in full. */
  synced(): void;
}

export interface ConfigSource {
  start(events: SourceEvents): Promise<void>;
  stop(): Promise<void>;
}
