import { ChannelContext, Core, type Logger, type Message } from '@edgecore/beehive';
import { MetaManagerModule, MetaStore } from '@edgecore/metamanager';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

export function recordingLogger(into: Node['logs']): Logger {
  const rec = (level: string) => (obj: object | string, msg?: string) => into.push({ level, obj, msg });
  return { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') };
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
  const mesh: Message<unknown>[] = [];
  const core = new Core(ctx, [mm, hub], log, { drainTimeoutMs: 2000 });
  core.register({
    name: 'edgemesh',
    group: 'mesh',
    enable: () => true,
    async start(c) {
      for await (const m of c.receive('edgemesh')) mesh.push(m);
    },
  });
  await core.start();
  return { ctx, core, hub, mm, mesh, logs, stop: () => core.shutdown() };
}

export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function tmpDir(): { dir: string; db: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'edgehub-'));
  return { dir, db: join(dir, 'edgecore.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let seq = 0;
export function uniqueNode(): string {
  return `edge-node-${process.pid}-${++seq}`;
}
