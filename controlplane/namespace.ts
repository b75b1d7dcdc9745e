// Namespace -> what the mesh needs of it: whether its pods are enrolled by
// default, and its mTLS mode.

import type { MtlsMode } from '../core/types.ts';
import type { KubeObject } from './source.ts';
import { FieldReader, describeObject, fieldPath } from './fields.ts';
import { MESH_ANNOTATION, MESH_VALUES, MTLS_MODE_ANNOTATION } from './annotations.ts';

export interface MeshNamespace {
  name: string;
  enrolled: boolean;
  mtlsMode: MtlsMode;
}

const MTLS_MODES = ['strict', 'permissive'] as const;

/** A namespace that has no Namespace object (yet): not enrolled, permissive. */
export function defaultNamespace(name: string): MeshNamespace {
  return { name, enrolled: false, mtlsMode: 'permissive' };
}

export function toNamespace(obj: KubeObject): MeshNamespace {
  const f: FieldReader = new FieldReader(describeObject(obj));
  const meta = f.metadata(obj, true);
  const annotations = f.stringMap(meta.fields.annotations, 'metadata.annotations');
  const mesh = f.oneOf(annotations[MESH_ANNOTATION], fieldPath('metadata.annotations', MESH_ANNOTATION), MESH_VALUES);
  const mtlsMode = f.oneOf(annotations[MTLS_MODE_ANNOTATION], fieldPath('metadata.annotations', MTLS_MODE_ANNOTATION), MTLS_MODES);
  return { name: meta.name, enrolled: mesh === 'enabled', mtlsMode: mtlsMode ?? 'permissive' };
}
