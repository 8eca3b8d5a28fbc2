import type { DnsServer } from './dns/dns-server';
import type { MeshMode } from './listen';
import type { ForwardProxy, TargetResolver } from './proxy/forward-proxy';
import type { PortalManager } from './proxy/portals';

/**
 * The service identifiers of EdgeMesh's replaceable parts that are not classes: the factories of
 * the parts that need what only start-up knows (the listen address, the mode). The container module binds the defaults; an embedder may rebind any of them.
 */

/** The DNS server of a listen address: the cluster zone, and a forwarder to the node's upstreams. */
export const DnsServerFactory = Symbol.for('edgecore.edgemesh.DnsServerFactory');
export type DnsServerFactory = (listen: { host: string; port: number }, mode: MeshMode) => DnsServer;

/**
 * The portals of a listen address; `onRetry` runs while some wait for file descriptors (the
 * owner then calls `retryUnopened` in turn with its other portal work).
 */
export const PortalManagerFactory = Symbol.for('edgecore.edgemesh.PortalManagerFactory');
export type PortalManagerFactory = (host: string, onRetry?: () => void) => PortalManager;

/** Unprivileged mode's explicit proxy, routing by `resolve`. */
export const ForwardProxyFactory = Symbol.for('edgecore.edgemesh.ForwardProxyFactory');
export type ForwardProxyFactory = (resolve: TargetResolver) => ForwardProxy;
