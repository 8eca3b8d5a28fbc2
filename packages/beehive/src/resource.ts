import { InvalidResourceError } from './beehive-errors';

/**
 * KubeEdge resource strings: `<namespace>/<type>[/<name>]`, e.g. `default/service/nginx-svc`.
 * Namespace `*` means every namespace in a list query. Names follow RFC 1123 subdomains
 * (Kubernetes object names); namespaces and types are RFC 1123 labels.
 */
export interface Resource {
  namespace: string;
  type: string;
  name?: string;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return s.length > 0 && s.length <= 63 && LABEL.test(s);
}

export function isDnsSubdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && SUBDOMAIN.test(s) && !s.includes('..');
}

export function parseResource(resource: string): Resource {
  if (typeof resource !== 'string' || resource === '')
    throw new InvalidResourceError(String(resource), 'empty');
  const parts = resource.split('/');
  if (parts.length < 2 || parts.length > 3) {
    throw new InvalidResourceError(resource, 'expected <namespace>/<type>[/<name>]');
  }
  const [namespace, type, name] = parts;
  if (namespace !== '*' && !isDnsLabel(namespace))
    throw new InvalidResourceError(resource, `bad namespace "${namespace}"`);
  if (!/^[a-z][a-z0-9]*$/.test(type) || type.length > 63)
    throw new InvalidResourceError(resource, `bad type "${type}"`);
  if (name !== undefined) {
    if (namespace === '*') throw new InvalidResourceError(resource, 'a named resource needs a namespace');
    if (!isDnsSubdomain(name)) throw new InvalidResourceError(resource, `bad name "${name}"`);
  }
  return name === undefined ? { namespace, type } : { namespace, type, name };
}

export function buildResource(namespace: string, type: string, name?: string): string {
  const r = name === undefined ? `${namespace}/${type}` : `${namespace}/${type}/${name}`;
  parseResource(r);
  return r;
}
