/**
 * `@edgecore/metamanager/client`: what another module needs to talk to MetaManager over beehive —
 * the typed client, the change records it forwards, the errors — without loading the store (and so
 * without loading SQLite).
 */
export * from './meta-client';
export * from '../metamanager-errors';
export { META_MODULE_NAME } from '../config';
