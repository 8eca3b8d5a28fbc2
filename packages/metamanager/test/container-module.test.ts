import 'reflect-metadata';
import { beehiveContainerModule, ChannelContext, Core } from '@edgecore/beehive';
import { Container } from 'inversify';
import {
  MetaClient,
  MetaManagerModule,
  MetaManagerOptions,
  metamanagerContainerModule,
  type BeehiveMetaClient,
} from '../src';
import { svc, tmpDb } from './helpers';

describe('metamanagerContainerModule', () => {
  it('wires the module into beehive; MetaClient talks to it; the store closes on unbind', async () => {
    const db = tmpDb();
    const c = new Container();
    c.loadSync(beehiveContainerModule, metamanagerContainerModule);
    c.bind(MetaManagerOptions).toConstantValue({ dataSource: db.path });
    const core = c.get(Core);
    await core.start();
    expect(core.state('metamanager')).toBe('running');
    const client = c.get<BeehiveMetaClient>(MetaClient);
    await client.put('default', 'service', 'a', svc('a'));
    expect(((await client.getService('default', 'a')) as any).metadata.name).toBe('a');
    expect(c.get(MetaManagerModule).store.count('service')).toBe(1);
    expect(c.get(ChannelContext).moduleNames('meta')).toEqual(['metamanager']);
    await core.shutdown();
    expect(c.get(MetaManagerModule).store.isOpen).toBe(false);
    await c.unbindAll();
    db.cleanup();
  });
});
