import { HttpParseError } from '../../edgemesh-errors';
import { LIMITS } from './protocol';

const CHUNK_SIZE = new RegExp(`^[0-9a-fA-F]{1,${LIMITS.chunkSizeDigits}}$`);

/**
 * Tracks where a chunked body ends (RFC 9112 §7.1) while the bytes are forwarded unchanged.
 * `feed` returns the index in `buf` just past the body, or -1 if it continues.
 */
export class ChunkedTracker {
  private state: 'size' | 'data' | 'data-crlf' | 'trailer' = 'size';
  private line = '';
  private remaining = 0;
  done = false;

  feed(buf: Buffer, start = 0): number {
    let i = start;
    while (i < buf.length) {
      switch (this.state) {
        case 'size': {
          const nl = buf.indexOf(10, i);
          if (nl < 0) {
            this.line += buf.toString('latin1', i);
            if (this.line.length > LIMITS.chunkLineBytes)
              throw new HttpParseError(400, 'chunk size line too long');
            return -1;
          }
          this.line += buf.toString('latin1', i, nl);
          i = nl + 1;
          const hex = this.line.replace(/\r$/, '').split(';')[0].trim();
          this.line = '';
          if (!CHUNK_SIZE.test(hex)) throw new HttpParseError(400, 'bad chunk size');
          this.remaining = parseInt(hex, 16);
          this.state = this.remaining === 0 ? 'trailer' : 'data';
          break;
        }
        case 'data': {
          const n = Math.min(this.remaining, buf.length - i);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.state = 'data-crlf';
            this.remaining = 2;
          }
          break;
        }
        case 'data-crlf': {
          const n = Math.min(this.remaining, buf.length - i);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = 'size';
          break;
        }
        case 'trailer': {
          const nl = buf.indexOf(10, i);
          if (nl < 0) {
            this.line += buf.toString('latin1', i);
            if (this.line.length > LIMITS.trailerBytes) throw new HttpParseError(400, 'trailers too long');
            return -1;
          }
          this.line += buf.toString('latin1', i, nl);
          i = nl + 1;
          const empty = this.line.replace(/\r$/, '') === '';
          this.line = '';
          if (empty) {
            this.done = true;
            return i;
          }
          break;
        }
      }
    }
    return -1;
  }
}
