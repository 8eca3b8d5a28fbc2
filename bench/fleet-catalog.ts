import type { PlannedDocument } from '@edgecore/edgecore';

/**
 * The synthetic fleet the join-size and fleet benches publish: `services` headless services in
 * `min(100, services / 100)` namespaces, each with `perService` Running pods spread round-robin
 * over `nodes` nodes named by `nodeName`, on one hostPort per service (the seed's model: a
 * Deployment's pods share their hostPort) — one document per service with its pods.
 */
export function fleetCatalog(o: {
  services: number;
  perService: number;
  nodes: number;
  nodeName: (i: number) => string;
}): { namespaces: number; docs: PlannedDocument[] } {
  const namespaces = Math.max(1, Math.min(100, Math.floor(o.services / 100)));
  const docs: PlannedDocument[] = [];
  let p = 0;
  for (let i = 0; i < o.services; i++) {
    const ns = `ns-${i % namespaces}`;
    const doc: PlannedDocument = {
      display: `service/svc-${i}`,
      objects: [
        {
          type: 'service',
          namespace: ns,
          name: `svc-${i}`,
          object: {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: `svc-${i}`, namespace: ns },
            spec: {
              clusterIP: 'None',
              selector: { app: `app-${i}` },
              ports: [{ name: 'http-0', port: 80, targetPort: 80 }],
            },
          },
        },
      ],
    };
    for (let j = 0; j < o.perService; j++, p++) {
      const n = p % o.nodes;
      const node = o.nodeName(n);
      const name = `app-${i}-${j}`;
      const ip = `10.${n >> 8}.${n & 255}.1`;
      doc.objects.push({
        type: 'pod',
        namespace: ns,
        name,
        node,
        object: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace: ns, labels: { app: `app-${i}` } },
          spec: {
            nodeName: node,
            containers: [{ name: 'c', ports: [{ containerPort: 80, hostPort: 30000 + (i % 20000) }] }],
          },
          status: {
            phase: 'Running',
            hostIP: ip,
            podIP: ip,
            conditions: [{ type: 'Ready', status: 'True' }],
          },
        },
      });
    }
    docs.push(doc);
  }
  return { namespaces, docs };
}
