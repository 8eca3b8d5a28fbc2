export * from './edgecore-errors';
export * from './config/config';
export * from './db-lock';
export * from './observability/observability-server';
export * from './logging';
export * from './host';
export * from './edgectl/manifest';
export * from './edgectl/publisher';
export { edgectl } from './cli/edgectl';
