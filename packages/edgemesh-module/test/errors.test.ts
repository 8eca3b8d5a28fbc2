import { BeehiveError } from '@edgecore/beehive';
import * as mesh from '../src';

describe('EdgeMesh errors', () => {
  const made: [string, Error][] = [
    ['HttpParseError', new mesh.HttpParseError(400, 'bad')],
    ['ConnectError', new mesh.ConnectError('10.0.0.1:80', 'ECONNREFUSED')],
    ['UpstreamTimeoutError', new mesh.UpstreamTimeoutError('10.0.0.1:80', 60000)],
    ['DnsFormatError', new mesh.DnsFormatError('truncated', 12)],
    ['IptablesError', new mesh.IptablesError('iptables-restore', 'line 3 failed\n')],
    ['VipPoolExhaustedError', new mesh.VipPoolExhaustedError('198.18.0.0/30', 'default/a')],
    ['InvalidOptionError', new mesh.InvalidOptionError('coalesceUs', -1, 'an integer')],
  ];

  it.each(made)('%s extends EdgeMeshError (a BeehiveError) with a stable EDGEMESH_ code', (name, e) => {
    expect(e).toBeInstanceOf(mesh.EdgeMeshError);
    expect(e).toBeInstanceOf(BeehiveError);
    expect(e.name).toBe(name);
    expect((e as mesh.EdgeMeshError).code).toMatch(/^EDGEMESH_[A-Z_]+$/);
  });

  it('no error class of the package stands apart from the base', () => {
    const classes = Object.entries(mesh).filter(
      ([k, v]) =>
        k !== 'EdgeMeshError' && typeof v === 'function' && /Error$/.test(k) && v.prototype instanceof Error,
    );
    expect(classes.length).toBeGreaterThanOrEqual(made.length);
    for (const [k, v] of classes)
      expect([k, (v as { prototype: object }).prototype instanceof mesh.EdgeMeshError]).toEqual([k, true]);
  });

  it('the words of a 504 are those of the timeout error', () => {
    const b = { host: '10.0.0.1', port: 80, key: '10.0.0.1:80' };
    expect(mesh.failures.timeout(b, 5).message).toBe(new mesh.UpstreamTimeoutError(b.key, 5).message);
  });

  it('the native addon error codes are listed', () => {
    expect(Object.values(mesh.NATIVE_ERROR_CODES)).toEqual([
      'EDGEMESH_HTTP_ENGINE',
      'EDGEMESH_SPLICE',
      'EDGEMESH_UDP_BATCH',
    ]);
  });
});
