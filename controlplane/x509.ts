// @peculiar/x509, loaded after the Reflect metadata API that its dependency
// injection (tsyringe) requires at load time. Import x509 through this module only.

import 'reflect-metadata';
export * from '@peculiar/x509';
