import { durationMs } from '../src';

describe('durationMs', () => {
  it("Go's and Istio's units; days only when asked; anything else undefined", () => {
    expect(durationMs('100ms')).toBe(100);
    expect(durationMs('1.5s')).toBe(1500);
    expect(durationMs('15m')).toBe(900_000);
    expect(durationMs('24h')).toBe(86_400_000);
    expect(durationMs('7d')).toBeUndefined();
    expect(durationMs('7d', { days: true })).toBe(604_800_000);
    for (const bad of ['30', 's', '1 week', '-1s', 30, undefined]) expect(durationMs(bad)).toBeUndefined();
  });
});
