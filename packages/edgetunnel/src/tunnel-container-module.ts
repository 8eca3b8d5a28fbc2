import { BeehiveModule, MetricsContribution } from '@edgecore/beehive';
import { ContainerModule } from 'inversify';
import { TunnelMetrics } from './metrics';
import { EdgeTunnelModule, TunnelEndpoint } from './tunnel-module';

/**
 * EdgeTunnel in one ContainerModule; bind `EdgeTunnelOptions` and `TunnelTargetsToken` (and
 * optionally `TunnelStatusSink`) before resolving.
 */
export const edgetunnelContainerModule = new ContainerModule(({ bind }) => {
  bind(EdgeTunnelModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeTunnelModule);
  bind(TunnelEndpoint).toService(EdgeTunnelModule);
  bind(MetricsContribution).toDynamicValue((c) => new TunnelMetrics(c.get(EdgeTunnelModule).agent));
});
