import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForPort } from './mosquitto';
import { freePort } from './wait';

/**
 * The reference reverse proxies of the conformance tests, in front of one upstream on 127.0.0.1:
 * nginx (upstream keepalive, as a production config has it) and haproxy (http mode, keep-alive),
 * each in the foreground with its own config and temp files, stopped by its pid. A request head
 * not complete in `headTimeoutMs` ends the connection in both (client_header_timeout, timeout
 * http-request).
 */
export class ReferenceProxy {
  private constructor(
    readonly name: 'nginx' | 'haproxy',
    readonly port: number,
    private readonly proc: ChildProcess,
    private readonly dir: string,
  ) {}

  static async nginx(upstream: number, headTimeoutMs = 1000): Promise<ReferenceProxy> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ref-nginx-'));
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
      .map((t) => `${t}_temp_path ${dir}/${t};`)
      .join(' ');
    writeFileSync(
      join(dir, 'nginx.conf'),
      `worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log; daemon off;
events { worker_connections 1024; }
http { access_log off; ${temp} client_header_timeout ${headTimeoutMs}ms; client_body_timeout ${headTimeoutMs}ms;
  upstream be { server 127.0.0.1:${upstream}; keepalive 8; }
  server { listen 127.0.0.1:${port}; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
`,
    );
    const proc = spawn('nginx', ['-c', join(dir, 'nginx.conf')], { stdio: 'ignore' });
    await waitForPort(port, 10_000);
    return new ReferenceProxy('nginx', port, proc, dir);
  }

  static async haproxy(upstream: number, headTimeoutMs = 1000): Promise<ReferenceProxy> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'ref-haproxy-'));
    writeFileSync(
      join(dir, 'haproxy.cfg'),
      `global
  maxconn 512
defaults
  mode http
  timeout connect 1s
  timeout client 2s
  timeout server 2s
  timeout http-request ${headTimeoutMs}ms
frontend f
  bind 127.0.0.1:${port}
  option http-keep-alive
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:${upstream}
`,
    );
    const proc = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: 'ignore' });
    await waitForPort(port, 10_000);
    return new ReferenceProxy('haproxy', port, proc, dir);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
