// Packet captures on the test cluster's links: tcpdump writes a pcap file inside a
// namespace, and `tcpPackets` reads it back as IPv4 TCP segments, so a test can
// check who talked to whom and what crossed the wire in clear.

import { readFile } from 'node:fs/promises';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';
import type { Cluster } from '../cluster/cluster.ts';

export interface TcpSegment {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export interface Capture {
  file: string;
  /** Stops tcpdump (it flushes on SIGTERM) and returns the raw pcap bytes. */
  stop(): Promise<Buffer>;
}

/** Starts `tcpdump -i IFACE -w FILE` in a namespace of the cluster and waits until it listens. */
export async function startCapture(cluster: Cluster, netns: string, iface: string, file: string): Promise<Capture> {
  // --immediate-mode: hand each packet over as it arrives (TPACKET_V3 otherwise holds
  // them in blocks that a stop can discard); -U: write it at once; -s 0: whole packets;
  // -Z root: keep the rights to write into the test's private temporary directory.
  const proc = cluster.spawn(netns, ['tcpdump', '-i', iface, '-n', '--immediate-mode', '-U', '-s', '0', '-Z', 'root', '-w', file, 'tcp']);
  await proc.waitForOutput(`listening on ${iface}`);
  return {
    file,
    async stop() {
      await proc.stop();
      return readFile(file);
    },
  };
}

const ETHERNET = 1;
const ETHERTYPE_IPV4 = 0x0800;
const IP_PROTO_TCP = 6;

/** The IPv4 TCP segments of a pcap file with Ethernet framing (what tcpdump writes for a veth). */
export function tcpPackets(pcap: Buffer): TcpSegment[] {
  if (pcap.length < 24) throw new NodemeshError(ErrorCode.PCAP, `pcap: ${pcap.length} bytes is shorter than the 24-byte file header`);
  const magic = pcap.readUInt32LE(0);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!little && pcap.readUInt32BE(0) !== 0xa1b2c3d4 && pcap.readUInt32BE(0) !== 0xa1b23c4d) {
    throw new NodemeshError(ErrorCode.PCAP, `pcap: unknown magic number 0x${magic.toString(16)} (pcapng is not supported)`);
  }
  const u32 = (at: number) => (little ? pcap.readUInt32LE(at) : pcap.readUInt32BE(at));
  const linkType = u32(20);
  if (linkType !== ETHERNET) throw new NodemeshError(ErrorCode.PCAP, `pcap: link type ${linkType}, expected Ethernet (1)`);
  const segments: TcpSegment[] = [];
  for (let at = 24; at + 16 <= pcap.length;) {
    const captured = u32(at + 8);
    const frame = pcap.subarray(at + 16, at + 16 + captured);
    at += 16 + captured;
    const segment = tcpOf(frame);
    if (segment) segments.push(segment);
  }
  return segments;
}

function tcpOf(frame: Buffer): TcpSegment | undefined {
  if (frame.length < 14 + 20 || frame.readUInt16BE(12) !== ETHERTYPE_IPV4) return undefined;
  const ip = frame.subarray(14);
  const headerLength = (ip[0]! & 0x0f) * 4;
  if (ip[9] !== IP_PROTO_TCP || ip.length < headerLength + 20) return undefined;
  const totalLength = Math.min(ip.readUInt16BE(2), ip.length);
  const tcp = ip.subarray(headerLength, totalLength);
  const dataOffset = (tcp[12]! >> 4) * 4;
  return {
    src: ip.subarray(12, 16).join('.'),
    dst: ip.subarray(16, 20).join('.'),
    srcPort: tcp.readUInt16BE(0),
    dstPort: tcp.readUInt16BE(2),
    payload: tcp.subarray(dataOffset),
  };
}
