// @peculiar/x509, loaded behind the part of the Reflect metadata API that its
// dependency injection (tsyringe) insists on at load time. Node ships no Reflect
// metadata and we use none, so a per-target WeakMap is enough. Import x509 in
// the control plane through this module only, so the shim runs first.

import './reflect-metadata.ts';

export * from '@peculiar/x509';
