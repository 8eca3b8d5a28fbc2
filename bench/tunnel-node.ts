/**
 * The parts of bench/tunnel.sh that run EdgeTunnel (compiled packages, as edgecore runs):
 *   relay   DIR NAME HOST:PORT                       a relay
 *   target  DIR NODE RELAY HOST:PORT[,HOST:PORT…]    a node that publishes those backends
 *   forward DIR NODE RELAY LOCALPORT TO HOST:PORT    a node with a local port whose connections
 *                                                    ride tunnel streams to HOST:PORT on node TO
 *                                                    (what EdgeMesh's L4 portal does for a
 *                                                    backend on another site)
 *   streams DIR NODE RELAY N TO HOST:PORT            N concurrent streams to an echo; prints RSS
 * Certificates in DIR (edgectl certs). Every process prints READY when it serves. TUNNEL_SPLICE=0
 * makes a node ask for no spliced streams (every stream rides the links through the relay);
 * NATIVE_TLS=0 makes it run its spliced streams' TLS in Node instead of EdgeMesh's native pump.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { loadIdentity, loadTlsEngine, Relay, TunnelAgent } from '../packages/edgetunnel/dist';

const [mode, dir, name, ...rest] = process.argv.slice(2);
const id = (role: 'node' | 'relay', n: string) =>
  loadIdentity(
    { cert: join(dir, `${n}.crt`), key: join(dir, `${n}.key`), ca: join(dir, 'ca.crt') },
    { role, name: n },
  );
const hp = (s: string): [string, number] => {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i), Number(s.slice(i + 1))];
};

async function agent(relay: string, allow: string[] = []): Promise<TunnelAgent> {
  const a = new TunnelAgent({
    identity: id('node', name),
    relays: [relay],
    targets: { allows: (h, p) => allow.includes(`${h}:${p}`) },
    splice: process.env.TUNNEL_SPLICE !== '0',
    // as edgecore does (modules.edgeTunnel.nativeTls): spliced streams' TLS in EdgeMesh's native pump; NATIVE_TLS=0: in Node
    tlsEngine: process.env.NATIVE_TLS === '0' ? undefined : loadTlsEngine(),
  });
  await a.start();
  if (!(await a.ready(1, 10_000))) throw new Error('no relay link');
  return a;
}

async function main(): Promise<void> {
  if (mode === 'relay') {
    const [h, p] = hp(rest[0]);
    // as edgerelay does: spliced pairs move in the kernel (EdgeMesh's splice engine); RELAY_KERNEL=0: in JavaScript
    const kernelJoiner =
      process.env.RELAY_KERNEL === '0'
        ? undefined
        : (await import('../packages/edgemesh-module/dist/proxy/l4/kernel-joiner')).kernelJoiner();
    await new Relay({ identity: id('relay', name), host: h, port: p, kernelJoiner }).listen();
  } else if (mode === 'target') {
    await agent(rest[0], rest[1].split(','));
  } else if (mode === 'forward') {
    const [relay, local, to, target] = rest;
    const a = await agent(relay);
    const [h, p] = hp(target);
    // as EdgeMesh's L4 portal does: the stream takes the client's connection when its TLS runs
    // in the native engine (then `open` resolves to the client itself); other streams are piped
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
      sock.pause();
      a.open({ node: to }, h, p, 'tcp', { client: sock }).then(
        (st) => {
          if (st === sock) return;
          sock.pipe(st);
          st.pipe(sock);
          sock.on('error', () => st.destroy());
          st.on('error', () => sock.destroy());
          sock.resume();
        },
        () => sock.destroy(),
      );
    });
    await new Promise<void>((r) => server.listen(Number(local), '127.0.0.1', r));
  } else if (mode === 'streams') {
    const [relay, n, to, target] = rest;
    const a = await agent(relay);
    const [h, p] = hp(target);
    // one stream first, echoed: a node that has talked to its peer before (its TLS session
    // ticket in hand: the streams below resume it, as later streams do)
    const warm = await a.open({ node: to }, h, p);
    await new Promise<void>((resolve) => (warm.once('data', () => resolve()), warm.write('warm')));
    warm.destroy();
    const resumed0 = a.stats.resumedSpliced;
    const before = process.memoryUsage().rss;
    const t0 = Date.now();
    const streams = await Promise.all(Array.from({ length: Number(n) }, () => a.open({ node: to }, h, p)));
    const openMs = Date.now() - t0;
    const resumed = a.stats.resumedSpliced - resumed0;
    const payload = Buffer.alloc(1024, 1);
    await Promise.all(
      streams.map(
        (s) =>
          new Promise<void>((resolve) => {
            let got = 0;
            s.on('data', (d: Buffer) => ((got += d.length) >= payload.length ? resolve() : undefined));
            s.write(payload);
          }),
      ),
    );
    const rss = process.memoryUsage().rss;
    console.log(
      `STREAMS ${n} open in ${openMs} ms (TLS resumed: ${resumed}), each echoed 1 KiB; client RSS ${(rss / 2 ** 20).toFixed(0)} MiB (+${((rss - before) / 2 ** 20).toFixed(0)} MiB)`,
    );
    for (const s of streams) s.destroy();
    await a.stop();
    process.exit(0);
  }
  console.log('READY');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
