import { silentLogger } from '@edgecore/beehive';
import { CheckSchedule } from '../src/check-schedule';

describe('CheckSchedule', () => {
  it('a check that fails (its read cut, say) is tried again, as one out of step is', async () => {
    let calls = 0;
    const s = new CheckSchedule(
      async () => {
        calls++;
        if (calls === 1) throw new Error('digest check abandoned');
        return true;
      },
      () => true,
      0, // no periodic check: only the retry can make the second call
      silentLogger,
    );
    s.soon(0);
    const deadline = Date.now() + 5_000;
    while (calls < 2) {
      if (Date.now() > deadline) throw new Error(`checked ${calls} time(s), not retried`);
      await new Promise((r) => setTimeout(r, 20));
    }
    s.stop();
    expect(calls).toBe(2);
  });
});
