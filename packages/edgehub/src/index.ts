export * from './edgehub-errors';
export * from './config';
export * from './topics';
export * from './embedded-broker';
export * from './edgehub-module';
export * from './edgehub-container-module';
