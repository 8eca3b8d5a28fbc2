import type { Http2Server, ServerHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Identity } from './certs';
import { TLS_CIPHERS } from './protocol';
import { TunnelCode, TunnelError } from './tunnel-errors';

/** The TLS every tunnel link uses, either end: 1.3 only, our suites, this identity and its CA. */
export function mtlsOptions(id: Identity): {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  minVersion: 'TLSv1.3';
  ciphers: string;
} {
  return { key: id.key, cert: id.cert, ca: id.ca, minVersion: 'TLSv1.3', ciphers: TLS_CIPHERS };
}

/**
 * A listening mutual-TLS server (a relay, or a node that takes direct dials): a peer without a
 * certificate of the fleet CA fails the handshake (`refused`); `accepted` gets the others, whose
 * role and revocation are the caller's to check. A listen failure is TUNNEL_LISTEN naming `what`.
 */
export async function listenMtls(
  id: Identity,
  alpn: string[],
  at: { host: string; port: number; what: string },
  accepted: (sock: TLSSocket) => void,
  refused: (err: Error, sock: TLSSocket) => void,
): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer({
    ...mtlsOptions(id),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: alpn,
  });
  server.on('secureConnection', accepted);
  server.on('tlsClientError', refused);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new TunnelError(TunnelCode.Listen, `${at.what} listen ${at.host}:${at.port}: ${e.message}`)),
    );
    server.listen(at.port, at.host, () => resolve());
  });
  return { server, address: server.address() as AddressInfo };
}

/** Serve HTTP/2 with `h2` on an established TLS socket; returns the session made for it. */
export function serveH2(h2: Http2Server, sock: TLSSocket): ServerHttp2Session {
  let session: ServerHttp2Session | undefined;
  const take = (s: ServerHttp2Session): void => void (session = s);
  h2.once('session', take);
  h2.emit('connection', sock);
  h2.off('session', take);
  return session!;
}
