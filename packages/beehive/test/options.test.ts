import { z as z4 } from 'zod';
import { z } from 'zod/v3';
import { beehiveOptionsSchema, InvalidOptionsError, optionsResolver, resolveOptions } from '../src';

describe('resolveOptions', () => {
  it('fills every default in and keeps the keys the schema does not name', () => {
    const log = { info: () => undefined };
    const o = resolveOptions(beehiveOptionsSchema, { mailboxSize: 8, log }, 'beehive');
    expect(o).toEqual({ mailboxSize: 8, syncTimeoutMs: 30_000, drainTimeoutMs: 5_000, log });
    expect(o.log).toBe(log); // passed through untouched
  });

  it('a bad option is an error naming its dotted key, the value and what it expected', () => {
    const schema = z.strictObject({
      pool: z.strictObject({ size: z.number().int().min(1).default(4) }).default({}),
    });
    let err: InvalidOptionsError | undefined;
    try {
      resolveOptions(schema, { pool: { size: 0 } }, 'upstream');
    } catch (e) {
      err = e as InvalidOptionsError;
    }
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect(err!.code).toBe('BEEHIVE_INVALID_OPTION');
    expect(err!.key).toBe('upstream.pool.size');
    expect(err!.message).toMatch(/^option upstream\.pool\.size: 0 is not valid: .*1/);
    // a package's own error class through optionsResolver
    class MyError extends Error {}
    const resolve = optionsResolver('mine', (key) => new MyError(key));
    expect(() => resolve(schema, { pool: { size: 'x' } })).toThrow(new MyError('mine.pool.size'));
  });

  it("takes an embedder's zod 4 schema as well as our zod 3 ones (safeParse is all it asks)", () => {
    const schema = z4.strictObject({ retries: z4.number().int().min(0).default(3) });
    expect(resolveOptions(schema, {}).retries).toBe(3);
    expect(() => resolveOptions(schema, { retries: -1 }, 'x')).toThrow(/option x\.retries: -1 is not valid/);
  });
});
