import { digestEquals, EMPTY_DIGEST, ObjectDigest, parseDigest, TypeDigest } from '../src';

describe('ObjectDigest', () => {
  it('does not depend on the order objects were seen in, and removing undoes adding', () => {
    const a = new ObjectDigest();
    const b = new ObjectDigest();
    const items: [string, number][] = [
      ['default/service/a', 1],
      ['default/service/b', 7],
      ['ns/service/c', 3],
    ];
    for (const [k, rv] of items) a.add(k, rv);
    for (const [k, rv] of [...items].reverse()) b.add(k, rv);
    expect(digestEquals(a.value, b.value)).toBe(true);
    b.add('x/service/y', 9);
    expect(digestEquals(a.value, b.value)).toBe(false);
    b.remove('x/service/y', 9);
    expect(b.value).toEqual(a.value);
    for (const [k, rv] of items) a.remove(k, rv);
    expect(a.value).toEqual(EMPTY_DIGEST);
  });

  it('a different resourceVersion of the same key is a different digest', () => {
    const a = new ObjectDigest();
    const b = new ObjectDigest();
    a.add('default/service/a', 1);
    b.add('default/service/a', 2);
    expect(a.value.count).toBe(b.value.count);
    expect(digestEquals(a.value, b.value)).toBe(false);
  });

  it('TypeDigest keeps each namespace and the whole type in step', () => {
    const t = new TypeDigest();
    t.add('a', 'a/pod/x', 1);
    t.add('b', 'b/pod/y', 2);
    const whole = new ObjectDigest();
    whole.add('a/pod/x', 1);
    whole.add('b/pod/y', 2);
    const v = t.value;
    expect(digestEquals(v, whole.value)).toBe(true);
    expect(Object.keys(v.namespaces!).sort()).toEqual(['a', 'b']);
    t.remove('a', 'a/pod/x', 1);
    expect(t.value.namespaces).toEqual({ b: v.namespaces!.b }); // an emptied namespace goes away
  });

  it.each([
    ['not JSON', '{'],
    ['no hash', '{"count":1}'],
    ['negative count', '{"count":-1,"hash":"0000000000000000"}'],
    ['short hash', '{"count":1,"hash":"abc"}'],
    ['bad namespace entry', '{"count":1,"hash":"0000000000000000","namespaces":{"a":{"count":"x"}}}'],
  ])('parseDigest refuses %s', (_n, text) => {
    expect(parseDigest(text)).toBeUndefined();
  });

  it('parseDigest keeps at and namespaces', () => {
    const d = parseDigest(
      '{"count":2,"hash":"00000000000000ff","at":5,"namespaces":{"a":{"count":2,"hash":"00000000000000ff"}}}',
    );
    expect(d).toEqual({
      count: 2,
      hash: '00000000000000ff',
      at: 5,
      namespaces: { a: { count: 2, hash: '00000000000000ff' } },
    });
  });
});
