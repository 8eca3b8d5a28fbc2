import { BeehiveModule, ChannelContext, MetricsContribution } from '@edgecore/beehive';
import { ContainerModule } from 'inversify';
import { BeehiveMetaClient, MetaClient } from './client/meta-client';
import { MetaManagerOptions } from './config';
import { MetaStore } from './dao/meta-store';
import { MetaServer } from './metaserver/meta-server';
import { MetaManagerModule } from './metamanager-module';
import { MetaManagerMetrics } from './metrics';

/**
 * MetaManager in one ContainerModule. Bind `MetaManagerOptions` (at least `dataSource`) before
 * resolving. `MetaClient` resolves to a beehive client whose source is `edgemesh` by default;
 * rebind it to give EdgeMesh another metadata source.
 */
export const metamanagerContainerModule = new ContainerModule(({ bind }) => {
  bind(MetaStore)
    .toDynamicValue((c) => {
      const o = c.get<MetaManagerOptions>(MetaManagerOptions);
      return new MetaStore(o.dataSource, { cacheSizeKiB: o.cacheSizeKiB });
    })
    .inSingletonScope()
    .onDeactivation((s) => s.close());
  bind(MetaServer)
    .toDynamicValue(
      (c) =>
        new MetaServer(c.get(MetaStore), {
          server: c.get<MetaManagerOptions>(MetaManagerOptions).metaServer?.server,
        }),
    )
    .inSingletonScope();
  bind(MetaManagerModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(MetaManagerModule);
  bind(MetricsContribution).toDynamicValue((c) => new MetaManagerMetrics(c.get(MetaManagerModule)));
  bind(MetaClient)
    .toDynamicValue((c) => new BeehiveMetaClient(c.get(ChannelContext), { source: 'edgemesh' }))
    .inSingletonScope();
});
