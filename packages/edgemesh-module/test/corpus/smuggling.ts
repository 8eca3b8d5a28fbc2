/**
 * The request-smuggling and normalization cases of the L7 proxy, as data: what our proxy answers
 * and forwards, and what nginx and haproxy do with the same bytes (http-differential.test.ts checks
 * all three; http-native.test.ts fuzzes from them).
 */
export const XFF = 'X-Forwarded-For: 127.0.0.1\r\n';
export const KA = 'Connection: keep-alive\r\n\r\n';
const CHUNKED_OK = `POST / HTTP/1.1\r\nHost: a\r\n${XFF}Transfer-Encoding: chunked\r\n${KA}2\r\nok\r\n0\r\n\r\n`;
const GET_OK = `GET / HTTP/1.1\r\nHost: a\r\n${XFF}${KA}`;
const H = 'Host: a\r\n';
const CH = 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n';

/**
 * What nginx and haproxy did with a case (their backend's view): `forward` it (as they normalize
 * it), or `refuse` it (a 400, nothing forwarded). Ours: the first status, and the exact bytes that
 * must reach the backend (undefined: nothing). Measured with nginx 1.22 and haproxy 2.6 (Debian 12).
 */
export const CASES: {
  name: string;
  req: string;
  status: number;
  backend?: string;
  nginx: 'forward' | 'refuse';
  haproxy: 'forward' | 'refuse';
}[] = [
  // RFC 9112 §2.2: empty lines before a request line are ignored; bare LFs end lines (both references)
  {
    name: 'an empty line (CRLF) before the request line',
    req: `\r\nGET / HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'an empty line (bare LF) before the request line',
    req: `\nGET / HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a head with bare LF line ends',
    req: 'GET / HTTP/1.1\nHost: a\n\n',
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a head whose last line ends with a bare LF',
    req: `GET / HTTP/1.1\r\n${H}\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // chunked framing: re-framed (as haproxy re-chunks and nginx de-chunks) or refused, never relayed raw
  {
    name: 'a chunk size with leading zeros',
    req: `${CH}0000000000000002\r\nok\r\n0\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a chunk extension with an unbalanced quote',
    req: `${CH}2;a="b\r\nok\r\n0\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a chunk extension',
    req: `${CH}2;a=b\r\nok\r\n0;x\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a chunk-size line ended by a bare LF',
    req: `${CH}2\nok\r\n0\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'chunk data ended by a bare LF',
    req: `${CH}2\r\nok\n0\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a space after the chunk size',
    req: `${CH}2 \r\nok\r\n0\r\n\r\n`,
    status: 200,
    backend: CHUNKED_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'a chunk-size line ended by a bare CR',
    req: `${CH}2\rok\r\n0\r\n\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  {
    name: 'a VT in a chunk-size line',
    req: `${CH}2\x0b\r\nok\r\n0\r\n\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  {
    name: 'chunk data not followed by CRLF',
    req: `${CH}2\r\nokXX0\r\n\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  // trailers: fields that must not be trailers are dropped (nginx drops all; haproxy relays all)
  {
    name: 'a Content-Length trailer',
    req: `${CH}2\r\nok\r\n0\r\nContent-Length: 5\r\nX-T: 1\r\n\r\n`,
    status: 200,
    backend: `POST / HTTP/1.1\r\nHost: a\r\n${XFF}Transfer-Encoding: chunked\r\n${KA}2\r\nok\r\n0\r\nX-T: 1\r\n\r\n`,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    // found by the fuzz under ASan (JavaScript engine): the LF that ended a bare-LF size line was
    // counted into the first trailer line, which then named a field one byte too long
    name: 'a last chunk ended by a bare LF, then a Content-Length trailer',
    req: `${CH}0\nContent-Length: 5\r\nX-T: 1\r\n\r\n`,
    status: 200,
    backend: `POST / HTTP/1.1\r\nHost: a\r\n${XFF}Transfer-Encoding: chunked\r\n${KA}0\r\nX-T: 1\r\n\r\n`,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // fields
  {
    name: 'field names with an underscore (dropped, as nginx)',
    req: `GET / HTTP/1.1\r\n${H}Transfer_Encoding: chunked\r\nX_A: 1\r\n\r\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'Transfer-Encoding in an HTTP/1.0 request',
    req: `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'forward',
  },
  {
    name: 'two equal Content-Length fields (one forwarded, as haproxy)',
    req: `POST / HTTP/1.1\r\n${H}Content-Length: 2\r\nContent-Length: 2\r\n\r\nok`,
    status: 200,
    backend: `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n${XFF}${KA}ok`,
    nginx: 'refuse',
    haproxy: 'forward',
  },
  // the request-target
  {
    name: 'a NUL in the request-target',
    req: `GET /a\x00b HTTP/1.1\r\n${H}\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  {
    name: 'a control byte in the request-target',
    req: `GET /a\x01b HTTP/1.1\r\n${H}\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  {
    name: 'an https:// absolute-form target on a portal (origin-form upstream, as nginx)',
    req: `GET https://a/x HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: `GET /x HTTP/1.1\r\nHost: a\r\n${XFF}${KA}`,
    nginx: 'forward',
    haproxy: 'forward',
  },
  {
    name: 'an absolute-form target without an authority (https:/x)',
    req: `GET https:/a/x HTTP/1.1\r\n${H}\r\n`,
    status: 400,
    nginx: 'refuse',
    haproxy: 'refuse',
  },
  {
    name: 'an absolute-form target of another scheme (ftp://: origin-form upstream, as nginx)',
    req: `GET ftp://a/x HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: `GET /x HTTP/1.1\r\nHost: a\r\n${XFF}${KA}`,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // upgrades: h2c is deprecated (RFC 9113 §3.1): not relayed, the request goes on as HTTP/1.1
  {
    name: 'Upgrade: h2c',
    req: `GET / HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // pipelining, also with the CRLF after a body that llhttp reads as an empty line
  {
    name: 'two pipelined requests',
    req: `GET /1 HTTP/1.1\r\n${H}\r\nGET /2 HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: `GET /1 HTTP/1.1\r\nHost: a\r\n${XFF}${KA}GET /2 HTTP/1.1\r\nHost: a\r\n${XFF}${KA}`,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // versions (RFC 9110 §2.5, §15.6.6)
  {
    name: 'HTTP/2.0 in a request line',
    req: `GET / HTTP/2.0\r\n${H}\r\n`,
    status: 505,
    nginx: 'refuse',
    haproxy: 'forward',
  },
  {
    name: 'HTTP/1.2 (answered as HTTP/1.1)',
    req: `GET / HTTP/1.2\r\n${H}\r\n`,
    status: 200,
    backend: GET_OK,
    nginx: 'forward',
    haproxy: 'forward',
  },
  // CONNECT is the explicit proxy's: on a portal a backend would read what follows as tunnel data
  {
    name: 'CONNECT on a portal',
    req: 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nhello',
    status: 400,
    nginx: 'refuse',
    haproxy: 'forward',
  },
  {
    name: 'a body, a CRLF, the next request',
    req: `POST /1 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nAAA\r\nGET /2 HTTP/1.1\r\n${H}\r\n`,
    status: 200,
    backend: `POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n${XFF}${KA}AAAGET /2 HTTP/1.1\r\nHost: a\r\n${XFF}${KA}`,
    nginx: 'forward',
    haproxy: 'forward',
  },
];
