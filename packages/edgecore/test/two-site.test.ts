import { runWalkthrough } from './walkthrough';

/**
 * The walkthrough across two sites behind NAT (examples/seed-walkthrough/two-site.sh): a cloud
 * namespace with mosquitto and two relays, two router namespaces with MASQUERADE, nodes a and c in
 * one site and b in the other; edgecore in iptables mode with EdgeTunnel. Real nginx, curl, an
 * L4/UDP/WebSocket echo through the tunnel, relay failover, the broker down, a foreign CA, a
 * revoked node and an unpublished address refused, and a fast failure with no relay.
 */
describe('two-site walkthrough (two-site.sh)', () => {
  it('runs every step and leaves nothing behind', async () => {
    const { code, out } = await runWalkthrough('two-site.sh');
    expect(code).toBe(0);
    expect(out).toContain('node a cannot reach 10.2.0.2');
    expect(out).toContain('20 of 20 new requests after the kill: 200');
    expect(out).toContain('ALL STEPS PASSED');
  }, 240_000);
});
