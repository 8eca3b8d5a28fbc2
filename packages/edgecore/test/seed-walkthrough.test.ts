import { runWalkthrough } from './walkthrough';

/**
 * The seed walkthrough end to end (examples/seed-walkthrough/run.sh): cloud (mosquitto, dnsmasq),
 * three edge nodes and a container in network namespaces the script creates and deletes; edgecore
 * in iptables mode; real nginx, curl, dig and getent; offline restart; two pods; delete.
 */
describe('seed walkthrough (run.sh)', () => {
  it('runs every step and leaves nothing behind', async () => {
    const { code, out } = await runWalkthrough('run.sh');
    expect(code).toBe(0);
    expect(out).toContain('ok: same VIP');
    expect(out).toMatch(
      /served by edge-node-b.*served by edge-node-c|served by edge-node-c.*served by edge-node-b/,
    );
    expect(out).toContain('ALL STEPS PASSED');
  }, 240_000);
});
