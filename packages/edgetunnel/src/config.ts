import { optionsResolver } from '@edgecore/beehive';
import { z } from 'zod/v3';
import { InvalidTunnelOptionError } from './tunnel-errors';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port');
const name = z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected an RFC 1123 name');

/**
 * edgecore.yaml `modules.edgeTunnel`. Strict: an unknown key is an error naming it. Certificates
 * come from `edgectl certs` (see README); the node's name is EdgeHub's `nodeName`.
 */
export const edgeTunnelConfigSchema = z.strictObject({
  enable: z.boolean().default(false),
  /**
   * This node's site: backends on nodes of the same site are dialled directly, those of another
   * site through the tunnel. Published in the node's status.
   */
  site: name.optional(),
  /** Every relay (`host:port`); the node links to all of them. */
  relays: z.array(hostPort).default([]),
  certFile: z.string().optional(),
  keyFile: z.string().optional(),
  caFile: z.string().optional(),
  /** Deny list (`edgectl certs revoke`), read again when it changes. */
  revokedFile: z.string().optional(),
  /** Take direct tunnel dials here (a node with an address other sites can reach). */
  listen: hostPort.optional(),
  /** The address other nodes dial for `listen` (published in the status); default `listen`. */
  advertise: hostPort.optional(),
  /** A stream not answered in this time fails and the next relay is tried. */
  openTimeoutMs: z.number().int().min(100).default(5000),
  /** Streams this node serves close after this long without a byte (0: never). */
  idleTimeoutSeconds: z.number().int().min(0).default(3600),
  udpIdleTimeoutSeconds: z.number().int().min(1).default(60),
  /** Link liveness: a link that leaves a ping unanswered for two intervals is closed and dialled again. */
  pingIntervalMs: z.number().int().min(100).default(2000),
  /**
   * TCP streams through a relay are spliced: TLS end to end between the nodes over two outbound
   * connections the relay joins (README "Spliced streams"). false: they ride the links.
   */
  splice: z.boolean().default(true),
  /**
   * The end-to-end TLS of spliced streams runs in EdgeMesh's native TLS pump (OpenSSL on an
   * engine thread) where its addon is built; false, or no addon: in Node's TLS.
   */
  nativeTls: z.boolean().default(true),
});
export type EdgeTunnelConfig = z.output<typeof edgeTunnelConfigSchema>;

/** What the module needs: its config and the node's name. */
export const EdgeTunnelOptions = Symbol.for('edgecore.EdgeTunnelOptions');
export type EdgeTunnelOptions = z.input<typeof edgeTunnelConfigSchema> & {
  nodeName: string;
  /** Modules started first (`metamanager`: the deny list is read from it). */
  dependencies?: string[];
};

export const resolveTunnelOptions = optionsResolver(
  'modules.edgeTunnel',
  (key, value, expected) => new InvalidTunnelOptionError(key, value, expected),
);
