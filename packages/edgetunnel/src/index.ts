export * from './tunnel-errors';
export * from './protocol';
export * from './certs';
export * from './deny-list';
export * from './framing';
export * from './relay';
export * from './agent';
