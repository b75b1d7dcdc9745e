// Workload keys and CSRs, made on the node so private keys never leave it:
// ECDSA P-256, one SPIFFE URI SAN, key exported as PKCS#8 PEM for node:tls.
//
// The CSR is one fixed PKCS#10 structure (RFC 2986), written here in DER with
// node:crypto doing the key and the signature. A general X.509 library (its
// ASN.1 schemas and dependency injection) cost every node ~5 MiB resident for
// this one structure; the control plane, which parses and checks what we send,
// still uses one.

import { generateKeyPair, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { promisify } from 'node:util';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface KeyAndCsr {
  /** PKCS#8 PEM. */
  keyPem: string;
  csrPem: string;
  /** DER SubjectPublicKeyInfo, to check that a returned certificate certifies this key. */
  publicKeySpki: Buffer;
}

export async function generateKeyAndCsr(identity: string): Promise<KeyAndCsr> {
  const { privateKey, publicKey } = await generateKeyPairAsync('ec', { namedCurve: 'prime256v1' });
  const publicKeySpki = publicKey.export({ type: 'spki', format: 'der' });
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    csrPem: pem('CERTIFICATE REQUEST', certificationRequest(identity, publicKeySpki, privateKey)),
    publicKeySpki,
  };
}

// Object identifiers, DER-encoded (tag 06, length, value).
const OID_EXTENSION_REQUEST = Buffer.from('06092a864886f70d01090e', 'hex'); // 1.2.840.113549.1.9.14 (PKCS#9)
const OID_SUBJECT_ALT_NAME = Buffer.from('0603551d11', 'hex'); // 2.5.29.17
const OID_ECDSA_WITH_SHA256 = Buffer.from('06082a8648ce3d040302', 'hex'); // 1.2.840.10045.4.3.2

const SEQUENCE = 0x30;
const SET = 0x31;
const INTEGER = 0x02;
const BOOLEAN = 0x01;
const OCTET_STRING = 0x04;
const BIT_STRING = 0x03;
const ATTRIBUTES = 0xa0; // [0] IMPLICIT SET OF Attribute
const GENERAL_NAME_URI = 0x86; // [6] IMPLICIT IA5String

function certificationRequest(identity: string, spki: Buffer, key: KeyObject): Buffer {
  // An IA5String holds ASCII only; a SPIFFE ID is printable ASCII by construction.
  if (!/^[\x21-\x7e]+$/.test(identity)) throw new Error(`identity ${JSON.stringify(identity)} is not a printable ASCII URI`);
  // The subject is empty, so the SAN extension is critical (RFC 5280 4.2.1.6).
  const san = tlv(SEQUENCE, tlv(GENERAL_NAME_URI, Buffer.from(identity, 'ascii')));
  const extensions = tlv(SEQUENCE, tlv(SEQUENCE, OID_SUBJECT_ALT_NAME, tlv(BOOLEAN, Buffer.from([0xff])), tlv(OCTET_STRING, san)));
  const info = tlv(SEQUENCE,
    tlv(INTEGER, Buffer.from([0])), // version 1
    tlv(SEQUENCE), // subject: empty Name
    spki,
    tlv(ATTRIBUTES, tlv(SEQUENCE, OID_EXTENSION_REQUEST, tlv(SET, extensions))),
  );
  // node:crypto signs ECDSA in DER (r, s) by default, as X.509 wants it.
  const signature = sign('sha256', info, key);
  return tlv(SEQUENCE, info, tlv(SEQUENCE, OID_ECDSA_WITH_SHA256), tlv(BIT_STRING, Buffer.from([0]), signature));
}

/** One DER tag-length-value. */
function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let rest = n; rest > 0; rest >>= 8) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
