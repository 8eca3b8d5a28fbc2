import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { ROLE_NODE, ROLE_RELAY } from './protocol';
import { CertificateError, TunnelCode, TunnelError } from './tunnel-errors';

/**
 * The fleet's identities, made with the `openssl` command (see README "Certificates" for why not a
 * JavaScript library): a CA (`ca.crt`, `ca.key`), and per node or relay a P-256 key and a
 * certificate whose subject is `O=edgecore, OU=<role>, CN=<name>` with the name (and a relay's
 * addresses) as subjectAltName. Keys and certificates are written 0600. Never through a shell.
 */

export type Role = typeof ROLE_NODE | typeof ROLE_RELAY;

function openssl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err)
        reject(
          new TunnelError(
            TunnelCode.Openssl,
            `openssl ${args[0]} failed: ${(stderr || err.message).trim().split('\n')[0]}`,
            { cause: err },
          ),
        );
      else resolve(stdout);
    });
  });
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export interface CaFiles {
  dir: string;
  cert: string;
  key: string;
}

export function caFiles(dir: string): CaFiles {
  return { dir, cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
}

/** Files of `name`'s identity in `dir`. */
export function identityFiles(dir: string, name: string): { cert: string; key: string } {
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

async function newKey(file: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
  chmodSync(file, 0o600);
}

/** `edgectl certs init`: a fleet CA in `dir` (refuses to overwrite one). */
export async function createCa(dir: string, days = 3650): Promise<CaFiles> {
  const f = caFiles(dir);
  if (existsSync(f.key)) throw new TunnelError(TunnelCode.Openssl, `${f.key} exists: a fleet has one CA`);
  await newKey(f.key);
  await openssl([
    'req', '-x509', '-new', '-key', f.key, '-sha256', '-days', String(days),
    '-subj', '/O=edgecore/OU=ca/CN=edgecore fleet CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', f.cert,
  ]); // prettier-ignore
  chmodSync(f.cert, 0o600);
  return f;
}

export interface IssueOptions {
  role: Role;
  name: string;
  /** Extra subjectAltNames: IP addresses or DNS names a relay (or a dialable node) is reached at. */
  altNames?: string[];
  days?: number;
  /** Explicit validity (openssl `ca` dates, `YYYYMMDDHHMMSSZ`), e.g. for an expired test certificate. */
  notBefore?: string;
  notAfter?: string;
  /** Write the certificate under this name instead of `name` (e.g. a second certificate). */
  fileName?: string;
}

/** `edgectl certs node NAME` / `edgectl certs relay NAME`: a key and a certificate signed by the CA. */
export async function issue(ca: CaFiles, o: IssueOptions): Promise<{ cert: string; key: string }> {
  if (!NAME.test(o.name) || o.name.length > 63)
    throw new TunnelError(TunnelCode.Openssl, `"${o.name}" is not a valid node name (RFC 1123, ≤ 63)`);
  for (const f of [ca.cert, ca.key])
    if (!existsSync(f))
      throw new CertificateError(TunnelCode.CertUnreadable, f, 'no fleet CA here (certs init)');
  const out = identityFiles(ca.dir, o.fileName ?? o.name);
  const san = [`DNS:${o.name}`, ...(o.altNames ?? []).map((a) => (isIP(a) ? `IP:${a}` : `DNS:${a}`))];
  const subj = `/O=edgecore/OU=${o.role}/CN=${o.name}`;
  await newKey(out.key);
  const ext = [
    `subjectAltName=${san.join(',')}`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth,clientAuth',
  ];
  const serial = `0x${randomBytes(16).toString('hex')}`;
  if (o.notBefore || o.notAfter) await signDated(ca, out, subj, ext, serial, o);
  else
    await openssl([
      'req', '-x509', '-new', '-key', out.key, '-CA', ca.cert, '-CAkey', ca.key, '-sha256',
      '-days', String(o.days ?? 365), '-set_serial', serial, '-subj', subj,
      ...ext.flatMap((e) => ['-addext', e]),
      '-out', out.cert,
    ]); // prettier-ignore
  chmodSync(out.cert, 0o600);
  return out;
}

/** Signing with explicit dates: `openssl ca` (the only 3.0 command that takes them). */
async function signDated(
  ca: CaFiles,
  out: { cert: string; key: string },
  subj: string,
  ext: string[],
  serial: string,
  o: IssueOptions,
): Promise<void> {
  const t = mkdtempSync(join(tmpdir(), 'edgetunnel-ca-'));
  try {
    writeFileSync(join(t, 'index.txt'), '');
    writeFileSync(join(t, 'serial'), serial.slice(2).toUpperCase() + '\n');
    writeFileSync(
      join(t, 'ca.cnf'),
      [
        '[ca]', 'default_ca = fleet', '[fleet]', `dir = ${t}`, 'database = $dir/index.txt',
        'serial = $dir/serial', 'new_certs_dir = $dir', 'default_md = sha256', 'policy = any',
        'unique_subject = no', 'copy_extensions = none', 'x509_extensions = ext',
        '[any]', 'O = optional', 'OU = optional', 'CN = supplied', '[ext]', ...ext.map((e) => e.replace('=', ' = ')),
      ].join('\n'),
    ); // prettier-ignore
    const csr = join(t, 'req.csr');
    await openssl(['req', '-new', '-key', out.key, '-subj', subj, '-out', csr]);
    await openssl([
      'ca', '-batch', '-config', join(t, 'ca.cnf'), '-cert', ca.cert, '-keyfile', ca.key, '-notext',
      ...(o.notBefore ? ['-startdate', o.notBefore] : []),
      ...(o.notAfter ? ['-enddate', o.notAfter] : ['-days', String(o.days ?? 365)]),
      '-in', csr, '-out', out.cert,
    ]); // prettier-ignore
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
}

/** A loaded identity: PEM material for `node:tls` and what the certificate says. */
export interface Identity {
  name: string;
  role: Role;
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  fingerprint256: string;
  validTo: Date;
}

function read(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new CertificateError(TunnelCode.CertUnreadable, file, (e as Error).message, { cause: e });
  }
}

/** The subject's `OU` and `CN`. */
export function subjectOf(x: X509Certificate): { ou?: string; cn?: string } {
  const out: { ou?: string; cn?: string } = {};
  for (const line of x.subject.split('\n')) {
    const [k, ...v] = line.split('=');
    if (k === 'OU') out.ou = v.join('=');
    if (k === 'CN') out.cn = v.join('=');
  }
  return out;
}

/**
 * Load and check the identity this process serves with: readable, signed by the CA, valid now,
 * of the expected role and name, and its key is the certificate's. Every failure is a
 * CertificateError naming the file and the reason (code TUNNEL_CERT_*).
 */
export function loadIdentity(
  files: { cert: string; key: string; ca: string },
  expect: { role: Role; name: string },
  now = new Date(),
): Identity {
  const certPem = read(files.cert);
  const keyPem = read(files.key);
  const caPem = read(files.ca);
  let x: X509Certificate;
  let caX: X509Certificate;
  try {
    x = new X509Certificate(certPem);
  } catch (e) {
    throw new CertificateError(TunnelCode.CertUnreadable, files.cert, 'not a PEM certificate', { cause: e });
  }
  try {
    caX = new X509Certificate(caPem);
  } catch (e) {
    throw new CertificateError(TunnelCode.CertUnreadable, files.ca, 'not a PEM certificate', { cause: e });
  }
  if (!x.checkIssued(caX) || !x.verify(caX.publicKey))
    throw new CertificateError(
      TunnelCode.CertWrongCa,
      files.cert,
      `not signed by the fleet CA in ${files.ca} (issuer "${x.issuer.replace(/\n/g, ', ')}")`,
    );
  const from = new Date(x.validFrom);
  const to = new Date(x.validTo);
  if (now < from)
    throw new CertificateError(
      TunnelCode.CertNotYetValid,
      files.cert,
      `not valid before ${from.toISOString()}`,
    );
  if (now > to) throw new CertificateError(TunnelCode.CertExpired, files.cert, `expired ${to.toISOString()}`);
  const s = subjectOf(x);
  if (s.ou !== expect.role || s.cn !== expect.name)
    throw new CertificateError(
      TunnelCode.CertNameMismatch,
      files.cert,
      `is for ${s.ou ?? '?'} "${s.cn ?? '?'}", this ${expect.role} is "${expect.name}"`,
    );
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new CertificateError(TunnelCode.CertUnreadable, files.key, 'not a PEM private key', { cause: e });
  }
  if (!x.checkPrivateKey(key))
    throw new CertificateError(TunnelCode.CertKeyMismatch, files.key, `is not the key of ${files.cert}`);
  return {
    name: expect.name,
    role: expect.role,
    cert: certPem,
    key: keyPem,
    ca: caPem,
    fingerprint256: x.fingerprint256,
    validTo: to,
  };
}

/** Role (OU) and name (CN) of a peer certificate as TLS reports it ('' when absent). */
export function peerOf(cert: PeerCertificate | undefined): {
  role: string;
  name: string;
  fingerprint256: string;
} {
  const one = (v: string | string[] | undefined): string => (Array.isArray(v) ? (v[0] ?? '') : (v ?? ''));
  return {
    role: one(cert?.subject?.OU),
    name: one(cert?.subject?.CN),
    fingerprint256: cert?.fingerprint256 ?? '',
  };
}

/**
 * `peerOf` for a certificate in DER (the native TLS pump reports the peer's so): the same role,
 * name and fingerprint as TLS would report for it ('' when absent or not a certificate).
 */
export function peerOfDer(der: Buffer): { role: string; name: string; fingerprint256: string } {
  let x: X509Certificate;
  try {
    x = new X509Certificate(der);
  } catch {
    return { role: '', name: '', fingerprint256: '' };
  }
  const field = (key: string): string => {
    const line = x.subject.split('\n').find((l) => l.startsWith(`${key}=`));
    return line ? line.slice(key.length + 1) : '';
  };
  return { role: field('OU'), name: field('CN'), fingerprint256: x.fingerprint256 };
}
