import { BeehiveModule } from '@edgecore/beehive';
import { ContainerModule } from 'inversify';
import { EdgeHubModule } from './edgehub-module';

/** EdgeHub in one ContainerModule; bind `EdgeHubOptions` before resolving. */
export const edgehubContainerModule = new ContainerModule(({ bind }) => {
  bind(EdgeHubModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeHubModule);
});
