import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Service } from '../../catalog/types';
import { ConnectError } from '../../edgemesh-errors';
import type { Backend } from '../../lb/backends';
import { attachPolicy, policyOf } from '../../lb/service-policy';

/**
 * TLS origination (`appProtocol: https`): a node's plain-HTTP clients call the service in
 * `http://` on its port; the HTTP/1 proxy balances each request and opens TLS to the backend,
 * verified against the CA the service names, with SNI set. The service says (annotations):
 * - `edgecore.io/backend-ca-file`: a PEM file on the node (a device vendor's CA, a fleet CA); none:
 *   the system's CAs;
 * - `edgecore.io/backend-sni`: the name sent and verified (default the service's DNS name,
 *   `<svc>.<ns>.svc.<clusterDomain>`).
 */
export const BACKEND_CA_FILE_ANNOTATION = 'edgecore.io/backend-ca-file';
export const BACKEND_SNI_ANNOTATION = 'edgecore.io/backend-sni';
/**
 * `"true"` on a service with an HTTP/2 port (`grpc`, `kubernetes.io/h2c`): its clients speak h2c
 * to the portal, the portal opens TLS (ALPN h2) to the backends, verified as above.
 */
export const BACKEND_TLS_ANNOTATION = 'edgecore.io/backend-tls';

export interface BackendTls {
  servername: string;
  /** What a connection made with these settings is pooled under (name and CA): never another's. */
  id: string;
  /** PEM of the CA(s) to verify against; undefined: the system's. */
  ca?: string;
  /** Why the configured CA cannot be used (every connect fails with it, naming the file). */
  error?: string;
  /** The one protocol offered in ALPN and required of the backend (`http/1.1` when unset). */
  alpn?: 'http/1.1' | 'h2';
}

/** A service's TLS origination settings (its CA file read now: a change of the service re-reads it). */
export function backendTlsOf(svc: Service, clusterDomain: string): BackendTls {
  const a = svc.metadata.annotations ?? {};
  const ns = svc.metadata.namespace ?? 'default';
  const servername = a[BACKEND_SNI_ANNOTATION] || `${svc.metadata.name}.${ns}.svc.${clusterDomain}`;
  const t: BackendTls = { servername, id: '' };
  const file = a[BACKEND_CA_FILE_ANNOTATION];
  if (file) {
    try {
      t.ca = readFileSync(file, 'utf8');
    } catch (e) {
      t.error = `${BACKEND_CA_FILE_ANNOTATION} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    }
  }
  const ca = t.ca
    ? createHash('sha256').update(t.ca).digest('hex').slice(0, 12)
    : t.error
      ? 'error'
      : 'system';
  t.id = `${servername}@${ca}`;
  return t;
}

const tlsOf = new WeakMap<readonly Backend[], BackendTls>();
const originated = {
  'http/1.1': new WeakMap<readonly Backend[], Backend[]>(),
  h2: new WeakMap<readonly Backend[], Backend[]>(),
};

/** BackendIndex attaches a TLS port's settings to its backend list. */
export function attachBackendTls(list: readonly Backend[], t: BackendTls): void {
  tlsOf.set(list, t);
}

/**
 * The backends of a TLS port as the HTTP/1 proxy reaches them when it originates TLS: the same
 * addresses, keyed apart (`tls/<name>@<CA>/host:port`: a pooled TLS connection is never a plain
 * one, nor one verified for another name or CA), with their TLS settings. The list itself when the
 * port has none.
 */
export function originating(
  list: readonly Backend[],
  alpn: 'http/1.1' | 'h2' = 'http/1.1',
): readonly Backend[] {
  const t = tlsOf.get(list);
  if (!t) return list;
  let out = originated[alpn].get(list);
  if (!out) {
    const tls = { ...t, alpn };
    out = list.map((b) => ({ ...b, key: `tls/${alpn}/${t.id}/${b.key}`, tls }));
    originated[alpn].set(list, out);
    // the service's request policy (retries, timeouts, outliers) holds for the TLS list too
    attachPolicy(out, policyOf(list));
  }
  return out;
}

/** TLS over a connected socket (routed or a tunnel stream) to `b`, verified; a ConnectError otherwise. */
export function startTls(raw: Socket, b: Backend, t: BackendTls, timeoutMs: number): Promise<Socket> {
  if (t.error) {
    raw.destroy();
    return Promise.reject(new ConnectError(b.key, `TLS: ${t.error}`));
  }
  return new Promise((resolve, reject) => {
    const alpn = t.alpn ?? 'http/1.1';
    const s = tlsConnect({ socket: raw, servername: t.servername, ca: t.ca, ALPNProtocols: [alpn] });
    const timer = setTimeout(() => s.destroy(new Error('TLS handshake timeout')), timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      // HTTP/2 needs the backend to have agreed to it (RFC 9113 §3.2); HTTP/1.1 is the default
      if (alpn === 'h2' && s.alpnProtocol !== 'h2') {
        s.destroy();
        reject(
          new ConnectError(b.key, `TLS: the backend did not agree to h2 (ALPN: ${s.alpnProtocol || 'none'})`),
        );
        return;
      }
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      raw.destroy();
      reject(new ConnectError(b.key, `TLS ${e.code ?? ''} ${e.message}`.replace(/ +/g, ' ').trim()));
    });
  });
}

/** SNI and ALPN of a TLS ClientHello (the first bytes of a connection), when it is all there. */
export function clientHello(buf: Buffer): { sni?: string; alpn?: string[] } | undefined {
  // record: type 22 (handshake), version, length; handshake: type 1 (ClientHello), length
  if (buf.length < 9 || buf[0] !== 0x16 || buf[5] !== 0x01) return undefined;
  let p = 9 + 2 + 32; // handshake header, client version, random
  const need = (n: number): boolean => p + n <= buf.length;
  if (!need(1)) return undefined;
  p += 1 + buf[p]; // session id
  if (!need(2)) return undefined;
  p += 2 + buf.readUInt16BE(p); // cipher suites
  if (!need(1)) return undefined;
  p += 1 + buf[p]; // compression methods
  if (!need(2)) return undefined;
  const end = Math.min(buf.length, p + 2 + buf.readUInt16BE(p));
  p += 2;
  const out: { sni?: string; alpn?: string[] } = {};
  while (p + 4 <= end) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    const body = buf.subarray(p + 4, Math.min(end, p + 4 + len));
    p += 4 + len;
    if (type === 0 && body.length >= 5 && body[2] === 0) {
      const n = body.readUInt16BE(3);
      out.sni = body.subarray(5, 5 + n).toString('latin1');
    } else if (type === 16 && body.length >= 2) {
      const list: string[] = [];
      for (let q = 2; q < body.length;) {
        const n = body[q];
        list.push(body.subarray(q + 1, q + 1 + n).toString('latin1'));
        q += 1 + n;
      }
      out.alpn = list;
    }
  }
  return out;
}
