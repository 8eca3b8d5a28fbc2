import type { ServiceCatalog } from '../catalog/catalog';

/**
 * The backends a node publishes itself — what EdgeTunnel lets other nodes open on it, and nothing
 * else: each container port of its own pods (`spec.nodeName`) at `podIP:containerPort`, at
 * `hostIP:hostPort` when it has one, at `hostIP:containerPort` for a hostNetwork pod; and every
 * port of the Endpoints addresses that name the node. Keys are `proto/host:port`.
 */
export function publishedBackends(catalog: ServiceCatalog, node: string): Set<string> {
  const out = new Set<string>();
  for (const p of catalog.pods.values()) {
    if (p.spec?.nodeName !== node) continue;
    const hostIP = p.status?.hostIP;
    const podIP = p.status?.podIP;
    for (const c of p.spec.containers ?? [])
      for (const port of c.ports ?? []) {
        const proto = (port.protocol ?? 'TCP').toLowerCase();
        if (podIP && !p.spec.hostNetwork) out.add(`${proto}/${podIP}:${port.containerPort}`);
        if (hostIP && port.hostPort) out.add(`${proto}/${hostIP}:${port.hostPort}`);
        if (hostIP && p.spec.hostNetwork) out.add(`${proto}/${hostIP}:${port.containerPort}`);
      }
  }
  for (const sl of catalog.slices.values())
    for (const e of sl.endpoints ?? []) {
      if (e.nodeName !== node) continue;
      for (const ip of e.addresses ?? [])
        for (const port of sl.ports ?? [])
          if (port.port) out.add(`${(port.protocol ?? 'TCP').toLowerCase()}/${ip}:${port.port}`);
    }
  return out;
}
