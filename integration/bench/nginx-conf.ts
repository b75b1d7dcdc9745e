// nginx configurations for the benchmark: the origin (a 1 KiB body over HTTP/1.1
// keep-alive) and the C references for a node-level mTLS tunnel, one worker per
// node each, TLS 1.3, the client certificate verified on the receiving node: a
// `stream` proxy on each node (L4), and an `http` proxy on each node with
// keep-alive upstreams (L7). Certificates are ECDSA P-256 from a throwaway CA,
// like the mesh's.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BODY_BYTES = 1024;

/** Ports the client node's nginx listens on (REDIRECT targets) and the server node's TLS ports. */
export const TUNNEL_PORTS = { httpIn: 16080, iperfIn: 16201, httpTls: 16443, iperfTls: 16444, l7In: 16180, l7Tls: 16543 };

/** The name in the server node's certificate, which the client node's proxies verify. */
export const SERVER_NAME = 'tunnel.nmb.test';

/** Idle keep-alive connections each L7 proxy keeps to its upstream: more than the 32 a saturation run opens. */
export const L7_UPSTREAM_KEEPALIVE = 64;

function common(dir: string, name: string): string {
  return [
    'worker_processes 1;',
    `pid ${join(dir, `${name}.pid`)};`,
    `error_log ${join(dir, `${name}-error.log`)} warn;`,
    'worker_rlimit_nofile 20000;',
    'events { worker_connections 8192; }',
  ].join('\n');
}

/** The start of an `http` block: no access log, temp files in `dir`, client connections kept open. */
function httpCommon(dir: string): string {
  return `  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  keepalive_requests 10000000;
  keepalive_timeout 600s;`;
}

/** An upstream of one server whose connections are kept open and reused. */
function keepAliveUpstream(name: string, server: string): string {
  return `
  upstream ${name} {
    server ${server};
    keepalive ${L7_UPSTREAM_KEEPALIVE};
    keepalive_requests 10000000;
    keepalive_timeout 600s;
  }`;
}

/** Proxies a location to a keep-alive upstream: HTTP/1.1 and no `Connection: close` passed on. */
const KEEP_ALIVE_PROXY = `proxy_http_version 1.1;
      proxy_set_header Connection "";`;

/** The origin server: every path answers 200 with a 1 KiB body. */
export function originConf(dir: string, name: string, port: number): string {
  return `${common(dir, name)}
http {
${httpCommon(dir)}
  default_type text/plain;
  server {
    listen ${port} reuseport backlog=4096;
    location / { return 200 "${'x'.repeat(BODY_BYTES)}"; }
  }
}
`;
}

function indented(indent: string, directives: string[]): string {
  return directives.map((line) => indent + line).join('\n');
}

/** The dialing side's TLS (the same directives in `stream` and `http`): TLS 1.3, the client certificate, the server's verified. */
function clientTls(certs: TunnelCerts, indent: string): string {
  return indented(indent, [
    'proxy_ssl_protocols TLSv1.3;',
    `proxy_ssl_certificate ${certs.clientCert};`,
    `proxy_ssl_certificate_key ${certs.clientKey};`,
    `proxy_ssl_trusted_certificate ${certs.ca};`,
    'proxy_ssl_verify on;',
    `proxy_ssl_name ${SERVER_NAME};`,
    'proxy_ssl_session_reuse on;',
  ]);
}

/** The receiving side's TLS (the same directives in `stream` and `http`): TLS 1.3, the client certificate required and verified. */
function serverTls(certs: TunnelCerts, sessionCache: string, indent: string): string {
  return indented(indent, [
    'ssl_protocols TLSv1.3;',
    `ssl_certificate ${certs.serverCert};`,
    `ssl_certificate_key ${certs.serverKey};`,
    `ssl_client_certificate ${certs.ca};`,
    'ssl_verify_client on;',
    `ssl_session_cache shared:${sessionCache}:10m;`,
  ]);
}

/** The client node's proxy: plaintext in (redirected), TLS with a client certificate out. */
export function tunnelClientConf(dir: string, certs: TunnelCerts, serverNodeIp: string): string {
  const upstream = (port: number) => `
  server {
    listen ${port === TUNNEL_PORTS.httpTls ? TUNNEL_PORTS.httpIn : TUNNEL_PORTS.iperfIn} backlog=4096;
    proxy_pass ${serverNodeIp}:${port};
    proxy_ssl on;
${clientTls(certs, '    ')}
  }`;
  return `load_module modules/ngx_stream_module.so;
${common(dir, 'tunnel-client')}
stream {${upstream(TUNNEL_PORTS.httpTls)}${upstream(TUNNEL_PORTS.iperfTls)}
}
`;
}

/** The server node's proxy: TLS in with a verified client certificate, plaintext to the origin pod. */
export function tunnelServerConf(dir: string, certs: TunnelCerts, originIp: string, httpPort: number, iperfPort: number): string {
  const server = (listen: number, target: number) => `
  server {
    listen ${listen} ssl backlog=4096;
${serverTls(certs, 'tls', '    ')}
    proxy_pass ${originIp}:${target};
  }`;
  return `load_module modules/ngx_stream_module.so;
${common(dir, 'tunnel-server')}
stream {${server(TUNNEL_PORTS.httpTls, httpPort)}${server(TUNNEL_PORTS.iperfTls, iperfPort)}
}
`;
}

/**
 * The client node's L7 proxy: plaintext HTTP in (redirected), each request
 * proxied over a pool of kept-alive TLS 1.3 connections with the client
 * certificate to the server node, whose certificate is verified against the CA.
 */
export function l7ClientConf(dir: string, certs: TunnelCerts, serverNodeIp: string): string {
  return `${common(dir, 'l7-client')}
http {
${httpCommon(dir)}${keepAliveUpstream('server_node', `${serverNodeIp}:${TUNNEL_PORTS.l7Tls}`)}
  server {
    listen ${TUNNEL_PORTS.l7In} backlog=4096;
    location / {
      proxy_pass https://server_node;
      ${KEEP_ALIVE_PROXY}
${clientTls(certs, '      ')}
    }
  }
}
`;
}

/** The server node's L7 proxy: TLS 1.3 in with a verified client certificate, kept-alive plaintext HTTP to the origin pod. */
export function l7ServerConf(dir: string, certs: TunnelCerts, originIp: string, httpPort: number): string {
  return `${common(dir, 'l7-server')}
http {
${httpCommon(dir)}${keepAliveUpstream('origin', `${originIp}:${httpPort}`)}
  server {
    listen ${TUNNEL_PORTS.l7Tls} ssl backlog=4096;
${serverTls(certs, 'l7tls', '    ')}
    location / {
      proxy_pass http://origin;
      ${KEEP_ALIVE_PROXY}
    }
  }
}
`;
}

export interface TunnelCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A throwaway CA and a server and a client certificate, all ECDSA P-256, written into `dir`. */
export function makeTunnelCerts(dir: string): TunnelCerts {
  const file = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-subj', '/CN=nmb-bench-ca', '-days', '2');
  for (const [name, ext] of [['server', `subjectAltName=DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth`], ['client', 'extendedKeyUsage=clientAuth']] as const) {
    writeFileSync(file(`${name}.ext`), `${ext}\n`);
    openssl('req', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${name}`);
    openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file(`${name}.pem`), '-days', '2', '-extfile', file(`${name}.ext`));
  }
  return { ca: file('ca.pem'), serverCert: file('server.pem'), serverKey: file('server.key'), clientCert: file('client.pem'), clientKey: file('client.key') };
}
