/** A CLI's console for a test: what it writes to stdout and stderr, and an empty stdin. */
export function capturedIo(stdin = ''): {
  out: string[];
  err: string[];
  io: { stdout: (s: string) => void; stderr: (s: string) => void; stdin: () => string };
} {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { stdout: (s) => out.push(s), stderr: (s) => err.push(s), stdin: () => stdin } };
}
