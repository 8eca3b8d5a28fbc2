import type { Head } from './head';
import type { RejectReason } from '../../edgemesh-errors';
import type { L7Route } from './policy';

/** Where a request goes: a service port's backends (LB state kept per `scope`), and rewrites. */
export interface HttpRoute extends L7Route {
  /** Header whose value keys ConsistentHash (default: the client IP). */
  hashHeader?: string;
  /** Rewrite of the request target sent upstream (forward proxy: absolute-form → origin-form). */
  target?: string;
  /** Replaces the client's Host field (forward proxy, RFC 9112 §3.2.2: the target's authority). */
  host?: string;
}

/** A resolver's refusal: the status and words of our answer (e.g. 502 unknown host). */
export interface RouteRefusal {
  status: number;
  message: string;
  /** A request refused for what it is (not for where it goes): counted by reason. */
  reason?: RejectReason;
  /** The connection ends after the answer (what follows cannot be read as requests). */
  close?: boolean;
}

/** Resolves a request to its route, or to an error status. */
export type RouteResolver = (head: Head, clientIp: string) => HttpRoute | RouteRefusal;

/** The route of a native engine's request: the route of its portal, or of the service its authority names. */
export type NativeRoute = Pick<HttpRoute, 'backends' | 'scope' | 'hashHeader'>;

/**
 * A native connection's router: called once per request. Portals ignore the argument; an explicit
 * forward proxy gets each request's `host[:port]` (from `http://host:port/path`) and may refuse.
 */
export type NativeRouter = (authority?: string) => NativeRoute | RouteRefusal;
