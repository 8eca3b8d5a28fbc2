import { ChannelContext, Core, newMessage, type Message } from '@edgecore/beehive';
import { recorderModule, tmpDir } from '@edgecore/test-support';
import { MetaManagerModule, MetaServer, MetaStore, type MetaManagerOptions } from '../src';

export function tmpDb(): { dir: string; path: string; cleanup: () => void } {
  const t = tmpDir('edgecore-meta-');
  return { dir: t.dir, path: t.db, cleanup: t.cleanup };
}

export function svc(
  name: string,
  ns = 'default',
  rv?: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns, ...(rv !== undefined ? { resourceVersion: String(rv) } : {}) },
    spec: {
      clusterIP: 'None',
      selector: { app: name },
      ports: [{ name: 'http-0', port: 12345, protocol: 'TCP', targetPort: 80 }],
    },
    ...extra,
  };
}

export interface Harness {
  ctx: ChannelContext;
  core: Core;
  mm: MetaManagerModule;
  store: MetaStore;
  /** Messages the `mesh` group received. */
  mesh: Message<unknown>[];
  /** Send a write the way EdgeHub does: sync, wait for the commit ack. */
  write(operation: string, resource: string, content: unknown, rv?: number): Promise<Message<unknown>>;
  query(resource: string): Promise<Message<unknown>>;
  stop(): Promise<void>;
}

export async function harness(
  path: string,
  opts: Partial<MetaManagerOptions> & {
    hub?: (m: Message<unknown>, ctx: ChannelContext) => void;
    withMesh?: boolean;
  } = {},
): Promise<Harness> {
  const ctx = new ChannelContext();
  const store = new MetaStore(path);
  const options: MetaManagerOptions = { dataSource: path, ...opts };
  const server = options.metaServer?.enable
    ? new MetaServer(store, { server: options.metaServer.server })
    : undefined;
  const mm = new MetaManagerModule(options, store, undefined, server);
  const recorder = recorderModule('edgemesh', 'mesh');
  const mesh = recorder.messages;
  const core = new Core(ctx, [mm]);
  if (opts.withMesh !== false) core.register(recorder.module);
  if (opts.hub) {
    const hub = opts.hub;
    core.register({
      name: 'edgehub',
      group: 'hub',
      enable: () => true,
      async start(c) {
        for await (const m of c.receive('edgehub')) hub(m, c);
      },
    });
  }
  await core.start();
  return {
    ctx,
    core,
    mm,
    store,
    mesh,
    write: (operation, resource, content, rv) =>
      ctx.sendSync(
        'metamanager',
        newMessage(content, {
          source: 'edgehub',
          group: 'meta',
          operation,
          resource,
          resourceVersion: rv ? String(rv) : undefined,
        }),
        5000,
      ),
    query: (resource) =>
      ctx.sendSync(
        'metamanager',
        newMessage(null, { source: 'edgemesh', group: 'meta', operation: 'query', resource }),
        5000,
      ),
    stop: () => core.shutdown(),
  };
}
