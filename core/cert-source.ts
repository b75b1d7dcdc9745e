// What the data plane needs from the certificate manager: the key and chain of a
// local workload identity, and the trust bundle to verify peers with.

export interface WorkloadCert {
  identity: string;
  keyPem: string;
  /** Leaf first. */
  chainPem: string;
  notAfter: Date;
}

export interface CertSource {
  certFor(identity: string): WorkloadCert | undefined;
  trustBundle(): string;
  /** Called after any certificate or the trust bundle changed. */
  onChange(listener: () => void): void;
}
