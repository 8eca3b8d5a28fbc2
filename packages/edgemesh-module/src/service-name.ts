/**
 * A service's DNS names (Kubernetes DNS-based service discovery, §2.3): `<svc>.<ns>.svc.<zone>`,
 * and the short forms `<svc>.<ns>.svc` and `<svc>.<ns>` that clients without search paths use.
 * One reading for DNS and the explicit proxy alike: lower case, a trailing dot ignored.
 */
export interface ServiceName {
  namespace: string;
  service: string;
  /** The name was in the zone (`…svc.<zone>`), not a short form. */
  inZone: boolean;
}

/**
 * The service `name` names under `zone` (lower case, no trailing dot), if it has the shape of a
 * service name; whether that service exists is the caller's question.
 */
export function parseServiceName(name: string, zone: string): ServiceName | undefined {
  let n = name.endsWith('.') ? name.slice(0, -1) : name;
  n = n.toLowerCase();
  const suffix = `.svc.${zone}`;
  let inZone = false;
  if (n.endsWith(suffix)) {
    n = n.slice(0, -suffix.length);
    inZone = true;
  } else if (n.endsWith('.svc')) n = n.slice(0, -4);
  const dot = n.indexOf('.');
  if (dot <= 0 || dot === n.length - 1 || n.indexOf('.', dot + 1) >= 0) return undefined;
  return { service: n.slice(0, dot), namespace: n.slice(dot + 1), inZone };
}

/** An endpoint of a headless service: `<label>.<svc>.<ns>.svc.<zone>` (spec §2.4.1). */
export interface EndpointName {
  label: string;
  service: string;
  namespace: string;
}

/**
 * The endpoint `name` names under `zone` (lower case, no trailing dot), if it has that shape;
 * whether the service is headless and has that endpoint is the caller's question.
 */
export function parseEndpointName(name: string, zone: string): EndpointName | undefined {
  const n = (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
  const suffix = `.svc.${zone}`;
  if (!n.endsWith(suffix)) return undefined;
  const parts = n.slice(0, -suffix.length).split('.');
  if (parts.length !== 3 || parts.some((p) => !p)) return undefined;
  return { label: parts[0], service: parts[1], namespace: parts[2] };
}
