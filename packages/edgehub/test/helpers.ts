import { ChannelContext, Core, newResponse, type Message } from '@edgecore/beehive';
import { MetaManagerModule, MetaStore } from '@edgecore/metamanager';
import { recorderModule, recordingLogger } from '@edgecore/test-support';
import { EdgeHubModule, type EdgeHubOptions } from '../src';

export interface Node {
  ctx: ChannelContext;
  core: Core;
  hub: EdgeHubModule;
  mm: MetaManagerModule;
  mesh: Message<unknown>[];
  logs: { level: string; obj: any; msg?: string }[];
  stop(): Promise<void>;
}

/** A node: beehive + MetaManager on `dbPath` + EdgeHub + a recording mesh module. */
export async function startNode(
  dbPath: string,
  hubOpts: Partial<EdgeHubOptions> & { nodeName: string; mqtt: EdgeHubOptions['mqtt'] },
): Promise<Node> {
  const logs: Node['logs'] = [];
  const log = recordingLogger(logs);
  const ctx = new ChannelContext();
  const mm = new MetaManagerModule({ dataSource: dbPath, remoteQueryTimeout: 2 }, new MetaStore(dbPath), log);
  const hub = new EdgeHubModule({ reconnect: { initialMs: 100, maxMs: 1000 }, ...hubOpts }, log);
  const recorder = recorderModule('edgemesh', 'mesh');
  const mesh = recorder.messages;
  const core = new Core(ctx, [mm, hub, recorder.module], log, { drainTimeoutMs: 2000 });
  await core.start();
  return { ctx, core, hub, mm, mesh, logs, stop: () => core.shutdown() };
}

let seq = 0;
export function uniqueNode(): string {
  return `edge-node-${process.pid}-${++seq}`;
}

/**
 * EdgeHub with a MetaManager stand-in that sees each `batch` EdgeHub commits and decides when (or
 * whether) to answer it (`answerBatch`).
 */
export async function fakeMetaNode(
  hub: EdgeHubModule,
  onBatch: (batch: Message<unknown>, ctx: ChannelContext) => void,
): Promise<{ ctx: ChannelContext; core: Core }> {
  const ctx = new ChannelContext();
  const core = new Core(ctx, [hub]);
  core.register({
    name: 'fake-meta',
    group: 'meta',
    enable: () => true,
    async start(c) {
      for await (const m of c.receive('fake-meta')) if (m.route.operation === 'batch') onBatch(m, c);
    },
  });
  await core.start();
  return { ctx, core };
}

/** Answer every write of a batch with OK. */
export function answerBatch(ctx: ChannelContext, batch: Message<unknown>): void {
  ctx.sendResp(
    newResponse(
      batch,
      (batch.content as unknown[]).map(() => 'OK'),
    ),
  );
}

// the broker of a test's own and the MQTT packets tests build: shared with edgectl's tests
export { connack5, FakeBroker, puback, publishId, publishPayload5, varint } from '@edgecore/test-support';
