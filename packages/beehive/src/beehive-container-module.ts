import { ContainerModule } from 'inversify';
import { ChannelContext } from './channel-context';
import { Core } from './core';
import { BusMetrics, MetricsContribution } from './metrics';

/**
 * The bus in one ContainerModule. Embedders add modules with
 * `bind(BeehiveModule).to(MyModule).inSingletonScope()`, and may bind `BeehiveOptions` and `Logger`.
 */
export const beehiveContainerModule = new ContainerModule(({ bind }) => {
  bind(ChannelContext).toSelf().inSingletonScope();
  bind(Core).toSelf().inSingletonScope();
  bind(MetricsContribution).toDynamicValue((c) => new BusMetrics(c.get(ChannelContext)));
});
