export * from './edgecore-errors';
export * from './config/config';
export * from './db-lock';
export * from './observability/metrics';
export * from './observability/observability-server';
export * from './logging';
export * from './host';
