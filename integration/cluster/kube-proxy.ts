// ClusterIP Services the way kube-proxy (iptables mode) programs them: a
// KUBE-SERVICES chain jumped to from PREROUTING and OUTPUT, one KUBE-SVC chain per
// Service port that picks an endpoint with `statistic --mode random`, and one
// KUBE-SEP chain per endpoint that DNATs to it. Hairpin masquerade is left out:
// a pod calling its own Service through the VIP is not emulated.

import { createHash } from 'node:crypto';
import type { ClusterPlan } from './plan.ts';
import { serviceEndpoints } from './plan.ts';

export const KUBE_SERVICES = 'KUBE-SERVICES';

function chainName(kind: 'SVC' | 'SEP', ...parts: string[]): string {
  return `KUBE-${kind}-${createHash('sha256').update(parts.join('/')).digest('hex').slice(0, 16).toUpperCase()}`;
}

/** Chain name -> its rules, as iptables-restore input lines. KUBE-SERVICES comes first. */
export function kubeProxyChains(plan: ClusterPlan): Map<string, string[]> {
  const chains = new Map<string, string[]>([[KUBE_SERVICES, []]]);
  for (const svc of plan.services) {
    for (const port of svc.ports) {
      const svcChain = chainName('SVC', svc.namespace, svc.name, String(port.port));
      chains.get(KUBE_SERVICES)!.push(`-A ${KUBE_SERVICES} -d ${svc.clusterIP}/32 -p tcp -m tcp --dport ${port.port} -j ${svcChain}`);
      const endpoints = serviceEndpoints(plan, svc, port);
      const svcRules: string[] = [];
      endpoints.forEach((ep, i) => {
        const sepChain = chainName('SEP', svc.namespace, svc.name, String(port.port), ep.pod.ip, String(ep.port));
        const remaining = endpoints.length - i;
        // Rule i wins with probability 1/remaining, so every endpoint gets an equal share.
        const pick = remaining > 1 ? ` -m statistic --mode random --probability ${(1 / remaining).toFixed(10)}` : '';
        svcRules.push(`-A ${svcChain}${pick} -j ${sepChain}`);
        chains.set(sepChain, [`-A ${sepChain} -p tcp -m tcp -j DNAT --to-destination ${ep.pod.ip}:${ep.port}`]);
      });
      chains.set(svcChain, svcRules);
    }
  }
  return chains;
}

/**
 * iptables-restore --noflush input that replaces every KUBE-* chain with the plan's
 * and deletes the KUBE-* chains (`existingChains`) the plan no longer has; the
 * PREROUTING/OUTPUT jumps are inserted at the top when missing, as kube-proxy does.
 */
export function renderKubeProxyRules(plan: ClusterPlan, existingChains: readonly string[], existingJumps: { prerouting: boolean; output: boolean }): string {
  const chains = kubeProxyChains(plan);
  const stale = existingChains.filter((c) => c.startsWith('KUBE-') && !chains.has(c));
  return [
    '*nat',
    ...[...chains.keys(), ...stale].map((c) => `:${c} - [0:0]`),
    ...[...chains.values()].flat(),
    ...stale.map((c) => `-X ${c}`),
    ...(existingJumps.prerouting ? [] : [`-I PREROUTING 1 -j ${KUBE_SERVICES}`]),
    ...(existingJumps.output ? [] : [`-I OUTPUT 1 -j ${KUBE_SERVICES}`]),
    'COMMIT',
    '',
  ].join('\n');
}
