import { recordingLogger } from '@edgecore/test-support';
import { EdgeCoreHost, parseConfig } from '../src';

/**
 * A whole edgecore node for a test, unprivileged (no iptables; DNS and the proxy on free ports),
 * MetaServer off: `mqtt` is the YAML flow mapping of its `modules.edgeHub.mqtt`. Started.
 */
export async function startUnprivilegedNode(o: {
  dataSource: string;
  nodeName: string;
  mqtt: string;
}): Promise<EdgeCoreHost> {
  const h = new EdgeCoreHost(
    parseConfig(`apiVersion: edgecore.config.kubeedge.io/v1alpha2
kind: EdgeCore
database: { dataSource: ${o.dataSource} }
observability: { listen: 127.0.0.1:0 }
modules:
  edgeHub: { nodeName: ${o.nodeName}, mqtt: ${o.mqtt} }
  metaManager: { metaServer: { enable: false } }
  edgeMesh: { mode: unprivileged, listenPort: 0, dns: { listenPort: 0, upstreams: [127.0.0.1:9] } }
`),
    { logger: recordingLogger([]) },
  );
  await h.start();
  return h;
}
