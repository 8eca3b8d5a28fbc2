import { BeehiveModule } from '@edgecore/beehive';
import { ContainerModule, type ContainerModuleLoadOptions } from 'inversify';
import { ServiceCatalog } from './catalog/catalog';
import { EdgeMeshModule } from './edgemesh-module';
import { BUILTIN_LB_STRATEGIES, LbStrategyContribution } from './lb/strategies';

/** Load balancing: the strategies, a contribution point looked up by `lbStrategy`. */
export function bindLb(bind: ContainerModuleLoadOptions['bind']): void {
  for (const s of BUILTIN_LB_STRATEGIES) bind(LbStrategyContribution).toConstantValue(s);
}

/**
 * EdgeMesh in one ContainerModule. Needs `EdgeMeshOptions` and a `MetaClient` (MetaManager's
 * container module binds one; an embedder may bind its own). Each sub-service is bound on its own
 * so it can be rebound.
 */
export const edgemeshContainerModule = new ContainerModule(({ bind }) => {
  bind(ServiceCatalog)
    .toDynamicValue(() => new ServiceCatalog())
    .inSingletonScope();
  bindLb(bind);
  bind(EdgeMeshModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeMeshModule);
});
