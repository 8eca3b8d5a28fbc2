import type { MetaChange } from '@edgecore/metamanager';
import { EventEmitter } from 'node:events';
import type { Endpoints, Pod, Service } from './types';

export type CatalogEvent =
  | { kind: 'service'; op: 'upsert' | 'delete'; key: string; service: Service; previous?: Service }
  | { kind: 'pod' | 'endpoints'; op: 'upsert' | 'delete'; key: string };

/**
 * In-memory view of services, endpoints and pods (KubeEdge EdgeMesh kept these behind
 * MetaManager queries per request; a map lookup is what a DNS answer can afford).
 * Keys are `<namespace>/<name>`. Emits `change` (CatalogEvent).
 */
export class ServiceCatalog extends EventEmitter {
  readonly services = new Map<string, Service>();
  readonly pods = new Map<string, Pod>();
  readonly endpoints = new Map<string, Endpoints>();
  /** Namespaces that have at least one service (NODATA vs NXDOMAIN for `<ns>.svc.<domain>`). */
  private readonly nsCount = new Map<string, number>();

  static key(namespace: string, name: string): string {
    return `${namespace}/${name}`;
  }

  hasNamespace(ns: string): boolean {
    return (this.nsCount.get(ns) ?? 0) > 0;
  }

  getService(namespace: string, name: string): Service | undefined {
    return this.services.get(`${namespace}/${name}`);
  }

  /** Replace the whole view (start-up load). */
  load(services: Service[], endpoints: Endpoints[], pods: Pod[]): void {
    this.services.clear();
    this.nsCount.clear();
    this.pods.clear();
    this.endpoints.clear();
    for (const s of services) this.putService(s);
    for (const e of endpoints) this.endpoints.set(keyOf(e), e);
    for (const p of pods) this.pods.set(keyOf(p), p);
  }

  /** Apply one change forwarded by MetaManager. Returns false for types the catalog ignores. */
  apply(ch: MetaChange): boolean {
    const key = `${ch.namespace}/${ch.name}`;
    const del = ch.operation === 'delete';
    switch (ch.type) {
      case 'service': {
        const previous = this.services.get(key);
        if (del) {
          if (!previous) return true;
          this.removeService(key, previous);
          this.emit('change', {
            kind: 'service',
            op: 'delete',
            key,
            service: previous,
          } satisfies CatalogEvent);
        } else {
          const s = withNamespace(ch.object as Service, ch.namespace);
          if (previous) this.removeService(key, previous);
          this.putService(s);
          this.emit('change', {
            kind: 'service',
            op: 'upsert',
            key,
            service: s,
            previous,
          } satisfies CatalogEvent);
        }
        return true;
      }
      case 'pod':
      case 'endpoints': {
        const map = (ch.type === 'pod' ? this.pods : this.endpoints) as Map<string, Pod | Endpoints>;
        if (del) map.delete(key);
        else map.set(key, withNamespace(ch.object as Pod, ch.namespace));
        this.emit('change', { kind: ch.type, op: del ? 'delete' : 'upsert', key } satisfies CatalogEvent);
        return true;
      }
      default:
        return false;
    }
  }

  private putService(s: Service): void {
    const ns = s.metadata.namespace ?? 'default';
    this.services.set(`${ns}/${s.metadata.name}`, s);
    this.nsCount.set(ns, (this.nsCount.get(ns) ?? 0) + 1);
  }

  private removeService(key: string, s: Service): void {
    this.services.delete(key);
    const ns = s.metadata.namespace ?? 'default';
    const n = (this.nsCount.get(ns) ?? 1) - 1;
    if (n > 0) this.nsCount.set(ns, n);
    else this.nsCount.delete(ns);
  }
}

function keyOf(o: { metadata: { name: string; namespace?: string } }): string {
  return `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;
}

function withNamespace<T extends { metadata: { namespace?: string } }>(o: T, ns: string): T {
  return o.metadata.namespace === ns ? o : { ...o, metadata: { ...o.metadata, namespace: ns } };
}
