import { ContainerModule } from 'inversify';
import { ChannelContext } from './channel-context';
import { Core } from './core';

/**
 * The bus in one ContainerModule. Embedders add modules with
 * `bind(BeehiveModule).to(MyModule).inSingletonScope()`, and may bind `BeehiveOptions` and `Logger`.
 */
export const beehiveContainerModule = new ContainerModule(({ bind }) => {
  bind(ChannelContext).toSelf().inSingletonScope();
  bind(Core).toSelf().inSingletonScope();
});
