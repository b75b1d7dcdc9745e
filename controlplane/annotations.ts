// The annotations users put on Namespaces, Pods and Services to steer the mesh.

/** "enabled" | "disabled": enrolls a Namespace's pods, or one Pod (which overrides its Namespace). */
export const MESH_ANNOTATION = 'nodemesh.io/mesh';
/** "strict" | "permissive" on a Namespace. */
export const MTLS_MODE_ANNOTATION = 'nodemesh.io/mtls-mode';
/** Comma-separated Service ports carried as opaque TCP, never parsed as HTTP. */
export const OPAQUE_PORTS_ANNOTATION = 'nodemesh.io/opaque-ports';

export const MESH_VALUES = ['enabled', 'disabled'] as const;
export type MeshAnnotation = (typeof MESH_VALUES)[number];
