// @peculiar/x509 with what it needs to load: its dependency injection (tsyringe)
// refuses to start without the Reflect metadata API, which Node does not ship.
// We use none of that metadata, so a minimal in-memory implementation is enough.
// Import x509 through this module only, so the shim always runs first.

import './reflect-metadata.ts';
export * from '@peculiar/x509';
