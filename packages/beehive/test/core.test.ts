import 'reflect-metadata';
import { EventEmitter } from 'node:events';
import { Container, injectable } from 'inversify';
import { until } from '@edgecore/test-support';
import {
  BeehiveModule,
  BeehiveOptions,
  beehiveContainerModule,
  ChannelContext,
  Core,
  DependencyError,
  DuplicateModuleError,
  newMessage,
  newResponse,
  ReadySignal,
  type RestartPolicy,
} from '../src';

/** A test module that records its lifecycle into a shared journal. */
class Recorder implements BeehiveModule {
  received: unknown[] = [];
  runs = 0;
  constructor(
    readonly name: string,
    readonly journal: string[],
    readonly opts: {
      group?: string;
      deps?: string[];
      enabled?: boolean;
      policy?: RestartPolicy;
      body?: (self: Recorder, ctx: ChannelContext, signal: AbortSignal) => Promise<void>;
      readyDelayMs?: number;
    } = {},
  ) {}
  get group(): string {
    return this.opts.group ?? 'user';
  }
  get dependencies(): string[] | undefined {
    return this.opts.deps;
  }
  get restartPolicy(): RestartPolicy | undefined {
    return this.opts.policy;
  }
  enable(): boolean {
    return this.opts.enabled ?? true;
  }
  async ready(): Promise<void> {
    if (this.opts.readyDelayMs) await new Promise((r) => setTimeout(r, this.opts.readyDelayMs));
    this.journal.push(`ready:${this.name}`);
  }
  async start(ctx: ChannelContext, signal: AbortSignal): Promise<void> {
    this.runs++;
    this.journal.push(`start:${this.name}`);
    if (this.opts.body) return this.opts.body(this, ctx, signal);
    for await (const m of ctx.receive(this.name)) {
      this.received.push(m.content);
      if (m.header.sync) ctx.sendResp(newResponse(m, `${this.name}:${String(m.content)}`));
    }
  }
  stop(): void {
    this.journal.push(`stop:${this.name}`);
  }
}

describe('Core', () => {
  it('starts in dependency order, awaiting ready(), and stops in reverse', async () => {
    const j: string[] = [];
    const ctx = new ChannelContext();
    const core = new Core(ctx, [
      new Recorder('edgemesh', j, { deps: ['metamanager'], group: 'mesh' }),
      new Recorder('edgehub', j, { group: 'hub' }),
      new Recorder('metamanager', j, { deps: ['edgehub'], group: 'meta', readyDelayMs: 20 }),
    ]);
    expect(core.startOrder()).toEqual(['edgehub', 'metamanager', 'edgemesh']);
    await core.start();
    expect(j).toEqual([
      'start:edgehub',
      'ready:edgehub',
      'start:metamanager',
      'ready:metamanager',
      'start:edgemesh',
      'ready:edgemesh',
    ]);
    expect(core.state('edgemesh')).toBe('running');
    j.length = 0;
    await core.shutdown();
    expect(j).toEqual(['stop:edgemesh', 'stop:metamanager', 'stop:edgehub']);
    expect(core.state('edgehub')).toBe('stopped');
    expect(ctx.isClosed).toBe(true);
  });

  it('shutdown drains each mailbox before stopping the module', async () => {
    const j: string[] = [];
    const ctx = new ChannelContext();
    const slow = new Recorder('slow', j, {
      body: async (self, c) => {
        for await (const m of c.receive('slow')) {
          await new Promise((r) => setTimeout(r, 2));
          self.received.push(m.content);
        }
      },
    });
    const core = new Core(ctx, [slow]);
    await core.start();
    for (let i = 0; i < 20; i++) await ctx.send('slow', newMessage(i));
    await core.shutdown();
    expect(slow.received).toHaveLength(20);
    expect(j.at(-1)).toBe('stop:slow');
  });

  it('a module that ignores the drain is aborted after drainTimeoutMs', async () => {
    const j: string[] = [];
    const ctx = new ChannelContext({ drainTimeoutMs: 50 });
    let abortedWith: unknown;
    const stubborn = new Recorder('stubborn', j, {
      body: (_s, _c, signal) =>
        new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            abortedWith = signal.reason;
            resolve();
          }),
        ),
    });
    const core = new Core(ctx, [stubborn], undefined, { drainTimeoutMs: 50 });
    await core.start();
    const t0 = Date.now();
    await core.shutdown('test-stop');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(String(abortedWith)).toContain('test-stop');
  });

  it('skips disabled modules and rejects a dependency on one, or on an unknown one', async () => {
    const j: string[] = [];
    const core = new Core(new ChannelContext(), [
      new Recorder('a', j, { enabled: false }),
      new Recorder('b', j),
    ]);
    expect(core.startOrder()).toEqual(['b']);
    await core.start();
    expect(core.state('a')).toBe('disabled');
    await core.shutdown();

    const bad = new Core(new ChannelContext(), [
      new Recorder('a', j, { enabled: false }),
      new Recorder('b', j, { deps: ['a'] }),
    ]);
    expect(() => bad.startOrder()).toThrow('depends on "a", which is disabled');
    const unknown = new Core(new ChannelContext(), [new Recorder('b', j, { deps: ['zzz'] })]);
    await expect(unknown.start()).rejects.toBeInstanceOf(DependencyError);
  });

  it('detects dependency cycles and duplicate names', () => {
    const j: string[] = [];
    const core = new Core(new ChannelContext(), [
      new Recorder('a', j, { deps: ['b'] }),
      new Recorder('b', j, { deps: ['a'] }),
    ]);
    expect(() => core.startOrder()).toThrow(/cycle: a -> b -> a/);
    expect(() => core.register(new Recorder('a', j))).toThrow(DuplicateModuleError);
  });

  it('OnFailure restarts a failing module with growing, capped backoff until retries run out', async () => {
    const j: string[] = [];
    const times: number[] = [];
    const flaky = new Recorder('flaky', j, {
      policy: { type: 'OnFailure', retries: 3, initialBackoffMs: 10, growth: 3, maxBackoffMs: 40 },
      body: async () => {
        times.push(Date.now());
        throw new Error('boom');
      },
    });
    const core = new Core(new ChannelContext(), [flaky]);
    await core.start();
    await until(() => core.state('flaky') === 'failed', 'the restarts to run out');
    expect(flaky.runs).toBe(4); // first run + 3 restarts
    expect(core.restarts('flaky')).toBe(3);
    expect(core.state('flaky')).toBe('failed');
    expect((core.lastError('flaky') as Error).message).toBe('boom');
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    // 10, 30, then capped at 40 (timers may fire late, never early)
    expect(gaps[0]).toBeGreaterThanOrEqual(9);
    expect(gaps[1]).toBeGreaterThanOrEqual(29);
    expect(gaps[2]).toBeGreaterThanOrEqual(39);
    expect(gaps[2]).toBeLessThan(200);
    await core.shutdown();
  });

  it('OnFailure does not restart a clean exit; Always does', async () => {
    const j: string[] = [];
    const once = new Recorder('once', j, {
      policy: { type: 'OnFailure', initialBackoffMs: 1 },
      body: async () => undefined,
    });
    let n = 0;
    const always = new Recorder('always', j, {
      policy: { type: 'Always', retries: 2, initialBackoffMs: 1 },
      body: async () => {
        n++;
      },
    });
    const core = new Core(new ChannelContext(), [once, always]);
    await core.start();
    await until(() => n === 3 && core.state('once') === 'stopped', 'both modules to finish');
    expect(once.runs).toBe(1);
    expect(core.state('once')).toBe('stopped');
    expect(n).toBe(3);
    await core.shutdown();
  });

  it('the mailbox survives a restart: a message sent while the module is down is handled', async () => {
    const j: string[] = [];
    let crashOnce = true;
    const m = new Recorder('m', j, {
      policy: { type: 'OnFailure', initialBackoffMs: 30 },
      body: async (self, ctx) => {
        if (crashOnce) {
          crashOnce = false;
          throw new Error('first run dies');
        }
        for await (const msg of ctx.receive('m')) self.received.push(msg.content);
      },
    });
    const ctx = new ChannelContext();
    const core = new Core(ctx, [m]);
    await core.start();
    await ctx.send('m', newMessage('kept'));
    await until(() => m.received.length > 0, 'the message to be received');
    expect(m.received).toEqual(['kept']);
    await core.shutdown();
  });

  it('a module that fails before it is ready fails start() instead of hanging it', async () => {
    const j: string[] = [];
    const never = new ReadySignal();
    const broken: BeehiveModule = {
      name: 'broken',
      group: 'user',
      enable: () => true,
      ready: () => never.promise,
      start: async () => {
        throw new Error('cannot bind');
      },
    };
    const core = new Core(new ChannelContext(), [broken, new Recorder('after', j, { deps: ['broken'] })]);
    await expect(core.start()).rejects.toThrow('cannot bind');
    expect(j).toEqual([]); // its dependents never started
    await core.shutdown();
  });

  it('SIGTERM triggers a graceful shutdown', async () => {
    const j: string[] = [];
    const fakeProc = new EventEmitter() as unknown as NodeJS.Process;
    const core = new Core(new ChannelContext(), [
      new Recorder('a', j),
      new Recorder('b', j, { deps: ['a'] }),
    ]);
    await core.start();
    const done = new Promise<void>((resolve) => core.installSignalHandlers(fakeProc, () => resolve()));
    (fakeProc as unknown as EventEmitter).emit('SIGTERM', 'SIGTERM');
    await done;
    expect(j.filter((x) => x.startsWith('stop'))).toEqual(['stop:b', 'stop:a']);
  });
});

describe('inversify wiring', () => {
  @injectable()
  class EmbedderModule implements BeehiveModule {
    readonly name = 'embedder';
    readonly group = 'user';
    enable(): boolean {
      return true;
    }
    async start(ctx: ChannelContext): Promise<void> {
      for await (const m of ctx.receive(this.name))
        ctx.sendResp(newResponse(m, `embedded:${String(m.content)}`));
    }
  }

  it('an embedder registers its own module by binding it; options are rebindable', async () => {
    const c = new Container();
    c.loadSync(beehiveContainerModule);
    c.bind(BeehiveOptions).toConstantValue({ mailboxSize: 16 });
    c.bind(BeehiveModule).to(EmbedderModule).inSingletonScope();
    const core = c.get(Core);
    const ctx = c.get(ChannelContext);
    expect(ctx.mailboxSize).toBe(16);
    expect(core.ctx).toBe(ctx);
    await core.start();
    const reply = await ctx.sendSync('embedder', newMessage('hi'), 1000);
    expect(reply.content).toBe('embedded:hi');
    await core.shutdown();
    await c.unbindAll();
  });

  it('works with no modules bound', async () => {
    const c = new Container();
    c.loadSync(beehiveContainerModule);
    const core = c.get(Core);
    expect(core.startOrder()).toEqual([]);
    await core.start();
    await core.shutdown();
  });
});
