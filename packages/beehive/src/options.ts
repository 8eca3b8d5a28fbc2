import { z } from 'zod/v3';
import { BeehiveError } from './beehive-errors';

/** An option that is missing or not what its key takes (`key`: its dotted path). */
export class InvalidOptionsError extends BeehiveError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
    code = 'BEEHIVE_INVALID_OPTION',
  ) {
    super(
      code,
      `option ${key || '(root)'}: ${JSON.stringify(value) ?? 'undefined'} is not valid: ${expected}`,
    );
  }
}

/** Makes a package's own error for a bad option (its class, its code). */
export type OptionErrorFactory = (key: string, value: unknown, expected: string) => Error;

/**
 * How every package resolves its options: `input` parsed by the package's zod `schema`, every
 * default filled in, or an error naming the key (`what` prefixes its path), the value and what the
 * key expected. Keys the schema does not name pass through untouched (a logger, callbacks).
 */
export function resolveOptions<S extends OptionsSchema, I extends object>(
  schema: S,
  input: I | undefined,
  what = '',
  error: OptionErrorFactory = (key, value, expected) => new InvalidOptionsError(key, value, expected),
): Omit<I, keyof OutputOf<S>> & OutputOf<S> {
  const r = schema.safeParse(input ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = [what, ...issue.path.map(String)].filter(Boolean).join('.');
    let value: unknown = input;
    for (const k of issue.path)
      value = (value as Record<PropertyKey, unknown> | undefined)?.[k as PropertyKey];
    throw error(path, value, issue.message);
  }
  return { ...input, ...(r.data as object) } as Omit<I, keyof OutputOf<S>> & OutputOf<S>;
}

/**
 * What `resolveOptions` asks of a schema: zod's `safeParse` — our packages' schemas are written to
 * zod's v3 API (`zod/v3`), and an embedder's module may bring a zod 4 schema or anything alike.
 */
export interface OptionsSchema<O = unknown> {
  safeParse(
    input: unknown,
  ):
    | { success: true; data: O }
    | { success: false; error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] } };
}

/** The options a schema gives. */
export type OutputOf<S> = S extends OptionsSchema<infer O> ? O : never;

/** A package's `resolveOptions`: its own error, and the name its keys are reported under. */
export type OptionsResolver = <S extends OptionsSchema, I extends object>(
  schema: S,
  input: I | undefined,
  what?: string,
) => Omit<I, keyof OutputOf<S>> & OutputOf<S>;

export function optionsResolver(defaultWhat: string, error: OptionErrorFactory): OptionsResolver {
  return (schema, input, what = defaultWhat) => resolveOptions(schema, input, what, error);
}

/** The bus: mailbox capacity, the default sync timeout, how long shutdown lets modules drain. */
export const beehiveOptionsSchema = z.object({
  /** Capacity of each module's mailbox (KubeEdge's channel buffer). */
  mailboxSize: z.number().int().min(1).default(1024),
  /** Timeout of sendSync / sendToGroupSync when the caller gives none. */
  syncTimeoutMs: z.number().int().min(1).default(30_000),
  /** How long shutdown lets a module drain its mailbox before aborting it. */
  drainTimeoutMs: z.number().int().min(0).default(5000),
});

export const BeehiveOptions = Symbol.for('edgecore.BeehiveOptions');
export type BeehiveOptions = z.input<typeof beehiveOptionsSchema>;

/** A module's restart policy (KubeEdge beehive `ModuleRestartPolicy`), its backoff defaulted. */
export const restartPolicySchema = z.object({
  type: z.enum(['Always', 'OnFailure', 'Never']),
  /** Maximum number of restarts; undefined = unlimited. */
  retries: z.number().int().min(0).optional(),
  initialBackoffMs: z.number().min(0).default(100),
  growth: z.number().min(1).default(2),
  maxBackoffMs: z.number().min(0).default(30_000),
});
