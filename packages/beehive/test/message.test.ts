import {
  fromWire,
  newError,
  newMessage,
  newResponse,
  Operation,
  parseResource,
  buildResource,
  toWire,
  isErrorMessage,
  isWriteOperation,
  splitHostPort,
  InvalidMessageError,
  InvalidResourceError,
} from '../src';

describe('message model', () => {
  it('builds a message with KubeEdge header and route fields', () => {
    const m = newMessage(
      { a: 1 },
      {
        source: 'edgehub',
        group: 'meta',
        operation: 'insert',
        resource: 'default/service/x',
        resourceVersion: '7',
      },
    );
    expect(m.header.msg_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Math.abs(m.header.timestamp - Date.now())).toBeLessThan(1000);
    expect(m.header.resourceversion).toBe('7');
    expect(m.route).toEqual({
      source: 'edgehub',
      destination: undefined,
      group: 'meta',
      operation: 'insert',
      resource: 'default/service/x',
    });
  });

  it('newResponse parents the reply to the request and swaps source/destination', () => {
    const req = newMessage('q', {
      source: 'edgemesh',
      destination: 'metamanager',
      operation: Operation.Query,
      resource: 'default/pod',
      sync: true,
    });
    const resp = newResponse(req, ['p1']);
    expect(resp.header.parent_msg_id).toBe(req.header.msg_id);
    expect(resp.header.msg_id).not.toBe(req.header.msg_id);
    expect(resp.route.operation).toBe('response');
    expect(resp.route.source).toBe('metamanager');
    expect(resp.route.destination).toBe('edgemesh');
    expect(resp.route.resource).toBe('default/pod');
    const err = newError(req, 'META_NOT_FOUND', 'nope');
    expect(isErrorMessage(err)).toBe(true);
    expect(err.content).toEqual({ code: 'META_NOT_FOUND', message: 'nope' });
    expect(err.header.parent_msg_id).toBe(req.header.msg_id);
  });

  it('parses the JSON KubeEdge puts on the wire and writes it back unchanged', () => {
    // Shape of a KubeEdge cloudhub → edgehub message (model.Message with omitempty fields).
    const kube = {
      header: {
        msg_id: 'a6d1c2b8-1',
        parent_msg_id: '',
        timestamp: 1700000000123,
        resourceversion: '42',
        sync: false,
      },
      route: {
        source: 'edgecontroller',
        group: 'resource',
        operation: 'update',
        resource: 'default/service/nginx-svc',
      },
      content: { metadata: { name: 'nginx-svc' } },
    };
    const m = fromWire(JSON.stringify(kube));
    expect(m.header.timestamp).toBe(1700000000123);
    expect(m.route.resource).toBe('default/service/nginx-svc');
    expect(JSON.parse(toWire(m))).toEqual(kube);
  });

  it.each([
    ['not json', '{', 'not JSON'],
    ['array', '[]', 'missing header'],
    ['no msg_id', '{"header":{}}', 'header.msg_id'],
    ['bad timestamp', '{"header":{"msg_id":"x","timestamp":"1"}}', 'header.timestamp'],
    ['bad sync', '{"header":{"msg_id":"x","sync":"yes"}}', 'header.sync'],
    ['bad route', '{"header":{"msg_id":"x"},"route":{"resource":5}}', 'route.resource'],
  ])('fromWire rejects %s', (_n, input, field) => {
    expect(() => fromWire(input)).toThrow(InvalidMessageError);
    expect(() => fromWire(input)).toThrow(field);
  });
});

describe('resource strings', () => {
  it.each([
    ['default/service/nginx-svc', { namespace: 'default', type: 'service', name: 'nginx-svc' }],
    ['kube-system/pod', { namespace: 'kube-system', type: 'pod' }],
    ['*/endpoints', { namespace: '*', type: 'endpoints' }],
    [
      'default/pod/nginx-deployment-54bf9847f8-sxk94',
      { namespace: 'default', type: 'pod', name: 'nginx-deployment-54bf9847f8-sxk94' },
    ],
    ['edgemesh/vip/default.nginx-svc', { namespace: 'edgemesh', type: 'vip', name: 'default.nginx-svc' }],
  ])('parses %s', (s, want) => {
    expect(parseResource(s)).toEqual(want);
  });

  it.each([
    ['', 'empty'],
    ['default', 'expected'],
    ['a/b/c/d', 'expected'],
    ['Default/service/x', 'bad namespace'],
    ['default/Service/x', 'bad type'],
    ['default/service/-x', 'bad name'],
    ['default/service/a..b', 'bad name'],
    ['*/service/x', 'needs a namespace'],
    ['default//x', 'bad type'],
  ])('rejects %j with a reason', (s, reason) => {
    expect(() => parseResource(s)).toThrow(InvalidResourceError);
    expect(() => parseResource(s)).toThrow(reason);
  });

  it('buildResource validates what it builds', () => {
    expect(buildResource('default', 'service', 'a')).toBe('default/service/a');
    expect(buildResource('default', 'service')).toBe('default/service');
    expect(() => buildResource('default', 'service', 'A_B')).toThrow(InvalidResourceError);
  });
});

describe('shared helpers', () => {
  it.each([
    ['insert', true],
    ['update', true],
    ['patch', true],
    ['delete', true],
    ['query', false],
    ['response', false],
    [undefined, false],
  ])('isWriteOperation(%s) = %s', (op, want) => {
    expect(isWriteOperation(op)).toBe(want);
  });

  it.each([
    ['127.0.0.1:1883', ['127.0.0.1', 1883]],
    ['[::1]:10550', ['::1', 10550]],
    ['localhost:0', ['localhost', 0]],
  ])('splitHostPort(%s)', (s, want) => {
    expect(splitHostPort(s)).toEqual(want);
  });

  it.each(['1883', ':1883', 'host:', 'host:99999', 'host:x'])(
    'splitHostPort(%s) throws naming the input',
    (s) => {
      expect(() => splitHostPort(s)).toThrow(
        s === '1883' || s === ':1883' ? 'expected host:port' : 'bad port',
      );
    },
  );
});
