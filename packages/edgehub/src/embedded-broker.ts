import type Aedes from 'aedes';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { EdgeHubError, HubCode } from './edgehub-errors';

/**
 * An in-process MQTT broker (aedes, in-memory persistence) so that `npm start` runs everything on
 * one machine. Retained messages and sessions live as long as the process.
 */
export class EmbeddedBroker {
  private broker?: Aedes;
  private server?: Server;

  async listen(host: string, port: number): Promise<AddressInfo> {
    // loaded here: a node on an external broker never pays for aedes (and its dependencies)
    const { createBroker } = await import('aedes');
    const broker = createBroker();
    const server = createServer(broker.handle);
    this.broker = broker;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) =>
        reject(
          new EdgeHubError(
            HubCode.BrokerListen,
            `embedded MQTT broker cannot listen on ${host}:${port}: ${e.message}`,
            { cause: e },
          ),
        ),
      );
      server.listen(port, host, () => resolve());
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const { server, broker } = this;
    this.server = undefined;
    this.broker = undefined;
    // Closing the broker ends its client connections, which lets the listener close.
    if (broker) await new Promise<void>((r) => broker.close(() => r()));
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}
