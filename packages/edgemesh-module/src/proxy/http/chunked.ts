import { HttpParseError } from '../../edgemesh-errors';
import { FORBIDDEN_TRAILERS, LIMITS } from './protocol';

const enum St {
  Size, // in a chunk-size line: hex digits, then whitespace
  Ext, // in its extensions (after `;`)
  SizeLf, // a CR ended the size line: LF must follow
  Data,
  DataEnd, // the data's CRLF (or LF)
  DataLf,
  Trailer, // in the trailer section (a line, or the start of one)
  TrailerLf,
  EndLf, // the empty line that ends the trailer section: its LF
  Done,
}

/** HEXDIG value of a byte, -1 when it is not one. */
function hex(b: number): number {
  if (b >= 48 && b <= 57) return b - 48;
  if (b >= 97 && b <= 102) return b - 87;
  if (b >= 65 && b <= 70) return b - 55;
  return -1;
}

/** A control byte other than HTAB (RFC 9110 §5.5: never in a field value, nor in a chunk line). */
const isCtl = (b: number): boolean => (b < 32 && b !== 9) || b === 127;
const TCHAR = /^[!#$%&'*+.^_`|~0-9A-Za-z-]$/;
const FORBIDDEN = new Set(FORBIDDEN_TRAILERS);

/**
 * A chunked body (RFC 9112 §7.1), read byte by byte, never ambiguously. A chunk size is hex digits
 * (leading zeros allowed; `LIMITS.chunkSizeDigits` significant ones), optional whitespace, and
 * extensions of any byte but a control one; a line ends with CRLF or a bare LF (nginx and haproxy
 * both take bare LFs, and both take a space after the size and extensions with unbalanced quotes,
 * which they then drop); a bare CR, a control byte, data not followed by a line end, a trailer
 * line that is no field, or obs-fold is a 400. With `out`, the body is re-framed on the way
 * (haproxy re-chunks, nginx de-chunks): our own size lines without extensions, CRLF line ends,
 * and the trailer fields that may be trailers — framing, routing and authentication fields
 * (`FORBIDDEN_TRAILERS`) are dropped. Without `out` it only finds where the body ends.
 * The native engine's `native/http/chunked.c` reads the same grammar; the conformance table runs
 * against both.
 */
export class ChunkedParser {
  private st = St.Size;
  private left = 0;
  private digits = 0;
  private significant = 0;
  private ws = false;
  private line = 0;
  private trailerBytes = 0;
  /** The current trailer line (reframing): its bytes, where its name ends. */
  private field: number[] = [];
  private nameEnd = -1;
  done = false;

  /**
   * Read `buf` from `start`; re-framed output goes to `out` when given. Returns the index just
   * past the body, or -1 when it goes on. Throws HttpParseError(400) on a malformed body.
   */
  feed(buf: Buffer, start = 0, out?: Buffer[]): number {
    let i = start;
    while (i < buf.length) {
      const b = buf[i];
      switch (this.st) {
        case St.Size: {
          const v = hex(b);
          if (v >= 0) {
            if (this.ws) return fail('whitespace inside a chunk size');
            this.digits++;
            if (this.significant > 0 || v > 0) this.significant++;
            if (this.significant > LIMITS.chunkSizeDigits) return fail('chunk size too large');
            this.left = this.left * 16 + v;
          } else if (this.digits === 0) return fail('bad chunk size');
          else if (b === 32 || b === 9) this.ws = true;
          else if (b === 59) this.st = St.Ext;
          else if (b === 13) this.st = St.SizeLf;
          else if (b !== 10) return fail('bad chunk size');
          // a bare LF ends the line: it is not a byte of the next one
          if (b === 10) this.sizeDone(out);
          else this.lineByte(LIMITS.chunkLineBytes, 'chunk size line too long');
          i++;
          break;
        }
        case St.Ext:
          if (b === 13) this.st = St.SizeLf;
          else if (isCtl(b) && b !== 10) return fail('control byte in a chunk extension');
          if (b === 10) this.sizeDone(out);
          else this.lineByte(LIMITS.chunkLineBytes, 'chunk size line too long');
          i++;
          break;
        case St.SizeLf:
          if (b !== 10) return fail('bare CR in a chunk size line');
          this.sizeDone(out);
          i++;
          break;
        case St.Data: {
          const n = Math.min(this.left, buf.length - i);
          if (out) out.push(buf.subarray(i, i + n));
          i += n;
          this.left -= n;
          if (this.left === 0) this.st = St.DataEnd;
          break;
        }
        case St.DataEnd:
        case St.DataLf:
          if (b === 13 && this.st === St.DataEnd) this.st = St.DataLf;
          else if (b === 10) {
            if (out) out.push(CRLF);
            this.st = St.Size;
            this.digits = this.significant = 0;
            this.ws = false;
          } else return fail('chunk data not followed by CRLF');
          i++;
          break;
        case St.Trailer:
          if (this.line === 0 && (b === 13 || b === 10)) {
            if (b === 10) return this.finish(out, i + 1);
            this.st = St.EndLf;
          } else if (b === 13) this.st = St.TrailerLf;
          else if (b === 10) this.trailerLine(out);
          else {
            if (this.line === 0 && (b === 32 || b === 9))
              return fail('obsolete line folding in the trailers');
            if (isCtl(b)) return fail('control byte in a trailer field');
            if (this.nameEnd < 0) {
              if (b === 58) {
                if (this.line === 0) return fail('a trailer field without a name');
                this.nameEnd = this.line;
              } else if (!TCHAR.test(String.fromCharCode(b))) return fail('bad trailer field name');
            }
            if (out) this.field.push(b);
            this.lineByte(Infinity, '');
          }
          if (++this.trailerBytes > LIMITS.trailerBytes) return fail('trailers too long');
          i++;
          break;
        case St.TrailerLf:
          if (b !== 10) return fail('bare CR in the trailers');
          this.trailerLine(out);
          i++;
          break;
        case St.EndLf:
          if (b !== 10) return fail('bare CR in the trailers');
          return this.finish(out, i + 1);
        case St.Done:
          return i;
      }
    }
    return -1;
  }

  private lineByte(max: number, what: string): void {
    if (++this.line > max) fail(what);
  }

  /** The size line is read: data follows, or (size 0) the trailer section. */
  private sizeDone(out: Buffer[] | undefined): void {
    if (out) out.push(Buffer.from(`${this.left.toString(16)}\r\n`, 'latin1'));
    this.line = 0;
    this.st = this.left === 0 ? St.Trailer : St.Data;
  }

  /** A trailer line is read: a field to forward, or one that may not be a trailer (dropped). */
  private trailerLine(out: Buffer[] | undefined): void {
    if (this.nameEnd < 0) fail('a trailer line without a colon');
    if (out) {
      const name = String.fromCharCode(...this.field.slice(0, this.nameEnd)).toLowerCase();
      if (!FORBIDDEN.has(name)) {
        const value = String.fromCharCode(...this.field.slice(this.nameEnd + 1)).trim();
        out.push(
          Buffer.from(`${String.fromCharCode(...this.field.slice(0, this.nameEnd))}: ${value}\r\n`, 'latin1'),
        );
      }
    }
    this.field = [];
    this.nameEnd = -1;
    this.line = 0;
    this.st = St.Trailer;
  }

  private finish(out: Buffer[] | undefined, end: number): number {
    if (out) out.push(CRLF);
    this.st = St.Done;
    this.done = true;
    return end;
  }
}

const CRLF = Buffer.from('\r\n', 'latin1');

function fail(message: string): never {
  throw new HttpParseError(400, message, 'bad-chunk');
}
