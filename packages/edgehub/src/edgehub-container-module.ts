import { BeehiveModule, MetricsContribution } from '@edgecore/beehive';
import { ContainerModule } from 'inversify';
import { EdgeHubModule, NodeStatusPublisher } from './edgehub-module';
import { EdgeHubMetrics } from './metrics';

/** EdgeHub in one ContainerModule; bind `EdgeHubOptions` before resolving. */
export const edgehubContainerModule = new ContainerModule(({ bind }) => {
  bind(EdgeHubModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeHubModule);
  bind(NodeStatusPublisher).toService(EdgeHubModule);
  bind(MetricsContribution).toDynamicValue((c) => new EdgeHubMetrics(c.get(EdgeHubModule)));
});
