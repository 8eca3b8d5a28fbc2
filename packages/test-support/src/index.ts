export * from './wait';
export * from './tmp';
export * from './netns';
export * from './mosquitto';
export * from './mqtt-relay';
export * from './recorder';
export * from './recording-backend';
export * from './reference-proxies';
