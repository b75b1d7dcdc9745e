// nginx configurations for the benchmark: the origin (a 1 KiB body over HTTP/1.1
// keep-alive) and the C reference for a node-level mTLS tunnel: a `stream` proxy
// on each node, TLS 1.3, the client certificate verified on the receiving node,
// one worker each. Certificates are ECDSA P-256 from a throwaway CA, like the mesh's.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const BODY_BYTES = 1024;

/** Ports the client node's nginx listens on (REDIRECT targets) and the server node's TLS ports. */
export const TUNNEL_PORTS = { httpIn: 16080, iperfIn: 16201, httpTls: 16443, iperfTls: 16444 };

function common(dir: string, name: string): string {
  return [
    'worker_processes 1;',
    `pid ${join(dir, `${name}.pid`)};`,
    `error_log ${join(dir, `${name}-error.log`)} warn;`,
    'worker_rlimit_nofile 20000;',
    'events { worker_connections 8192; }',
  ].join('\n');
}

/** The origin server: every path answers 200 with a 1 KiB body. */
export function originConf(dir: string, name: string, port: number): string {
  return `${common(dir, name)}
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  keepalive_requests 10000000;
  keepalive_timeout 600s;
  default_type text/plain;
  server {
    listen ${port} reuseport backlog=4096;
    location / { return 200 "${'x'.repeat(BODY_BYTES)}"; }
  }
}
`;
}

/** The client node's proxy: plaintext in (redirected), TLS with a client certificate out. */
export function tunnelClientConf(dir: string, certs: TunnelCerts, serverNodeIp: string): string {
  const upstream = (port: number) => `
  server {
    listen ${port === TUNNEL_PORTS.httpTls ? TUNNEL_PORTS.httpIn : TUNNEL_PORTS.iperfIn} backlog=4096;
    proxy_pass ${serverNodeIp}:${port};
    proxy_ssl on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_certificate ${certs.clientCert};
    proxy_ssl_certificate_key ${certs.clientKey};
    proxy_ssl_trusted_certificate ${certs.ca};
    proxy_ssl_verify on;
    proxy_ssl_name ${SERVER_NAME};
    proxy_ssl_session_reuse on;
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
    ssl_protocols TLSv1.3;
    ssl_certificate ${certs.serverCert};
    ssl_certificate_key ${certs.serverKey};
    ssl_client_certificate ${certs.ca};
    ssl_verify_client on;
    ssl_session_cache shared:tls:10m;
    proxy_pass ${originIp}:${target};
  }`;
  return `load_module modules/ngx_stream_module.so;
${common(dir, 'tunnel-server')}
stream {${server(TUNNEL_PORTS.httpTls, httpPort)}${server(TUNNEL_PORTS.iperfTls, iperfPort)}
}
`;
}

const SERVER_NAME = 'tunnel.nmb.test';

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
