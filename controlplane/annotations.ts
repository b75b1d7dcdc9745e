// The annotations users put on Namespaces, Pods and Services to steer the mesh.

/** "enabled" | "disabled": enrolls a Namespace's pods, or one Pod (which overrides its Namespace). */
export const MESH_ANNOTATION = 'nodemesh.io/mesh';
/** "strict" | "permissive" on a Namespace. */
export const MTLS_MODE_ANNOTATION = 'nodemesh.io/mtls-mode';
/** Comma-separated Service ports carried as opaque TCP, never parsed as HTTP. */
export const OPAQUE_PORTS_ANNOTATION = 'nodemesh.io/opaque-ports';

/** On a Pod: open outbound connections it may hold through its node's proxy (a whole number, 1 to 1,000,000). */
export const MAX_CONNECTIONS_ANNOTATION = 'nodemesh.io/max-connections';
/** On a Pod: concurrent outbound HTTP requests it may have in flight through its node's proxy (1 to 1,000,000). */
export const MAX_CONCURRENT_REQUESTS_ANNOTATION = 'nodemesh.io/max-concurrent-requests';
/** The largest per-pod limit an annotation may set. */
export const MAX_POD_LIMIT = 1_000_000;

export const MESH_VALUES = ['enabled', 'disabled'] as const;
export type MeshAnnotation = (typeof MESH_VALUES)[number];
