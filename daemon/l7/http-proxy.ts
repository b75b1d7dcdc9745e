// http-proxy for h1-outbound.ts and http-inbound.ts, without the `util._extend`
// deprecation warning (DEP0060) it makes every process print on its first
// proxied request. 1.18.1 (2020) is its last release, and it keeps
// `require('util')._extend` in module-level variables when it loads. So it is
// loaded here right after http-proxy-util-extend.ts has put an equivalent
// without the warning in `util._extend` (ES modules evaluate their imports in
// order, in the sources and in the bundle), and Node's own is put back at once:
// any other caller of `util._extend` still gets the warning, and no other
// deprecation is hidden. Import http-proxy through this file only.

import { restoreUtilExtend } from './http-proxy-util-extend.ts';
import httpProxy from 'http-proxy';

restoreUtilExtend();

export default httpProxy;
