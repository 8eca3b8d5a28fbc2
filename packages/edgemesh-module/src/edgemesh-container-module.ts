import { BeehiveModule } from '@edgecore/beehive';
import { ContainerModule } from 'inversify';
import { ServiceCatalog } from './catalog/catalog';
import { EdgeMeshModule } from './edgemesh-module';

/**
 * EdgeMesh in one ContainerModule. Needs `EdgeMeshOptions` and a `MetaClient` (MetaManager's
 * container module binds one; an embedder may bind its own). Each sub-service is bound on its own
 * so it can be rebound.
 */
export const edgemeshContainerModule = new ContainerModule(({ bind }) => {
  bind(ServiceCatalog)
    .toDynamicValue(() => new ServiceCatalog())
    .inSingletonScope();
  bind(EdgeMeshModule).toSelf().inSingletonScope();
  bind(BeehiveModule).toService(EdgeMeshModule);
});
