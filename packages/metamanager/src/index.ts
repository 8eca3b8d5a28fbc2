export * from './metamanager-errors';
export * from './config';
export * from './dao/meta-store';
export * from './process';
export * from './client/meta-client';
export * from './metaserver/meta-server';
export * from './metamanager-module';
export * from './metamanager-container-module';
