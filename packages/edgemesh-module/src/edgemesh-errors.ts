import { BeehiveError } from '@edgecore/beehive';
/** EdgeMesh errors, each with a stable code. */
/** Base of this package's errors: a BeehiveError, so every edgecore error has a stable `code`. */
export class EdgeMeshError extends BeehiveError {}

export class VipPoolExhaustedError extends EdgeMeshError {
  constructor(
    readonly subnet: string,
    readonly service: string,
  ) {
    super('EDGEMESH_VIP_EXHAUSTED', `no free VIP in ${subnet} for service ${service}`);
  }
}

export class VipConflictError extends EdgeMeshError {
  constructor(
    readonly ip: string,
    readonly service: string,
    readonly holder: string,
  ) {
    super('EDGEMESH_VIP_CONFLICT', `service ${service} wants ${ip}, already held by ${holder}`);
  }
}

export class InvalidSubnetError extends EdgeMeshError {
  constructor(subnet: string, reason: string) {
    super('EDGEMESH_INVALID_SUBNET', `invalid subNet "${subnet}": ${reason}`);
  }
}

export class DnsListenError extends EdgeMeshError {
  constructor(address: string, cause: Error) {
    super('EDGEMESH_DNS_LISTEN', `DNS server cannot listen on ${address}: ${cause.message}`, { cause });
  }
}

/** A native piece was required by config (`native`) but the addon is not built. */
export class NativeUnavailableError extends EdgeMeshError {
  constructor(what: string, why: string) {
    super('EDGEMESH_NATIVE_UNAVAILABLE', `${what}: the native addon is not built (${why})`);
  }
}

/** An option given to a library class is out of its range (edgecore's config schema checks the file). */
export class InvalidOptionError extends EdgeMeshError {
  constructor(
    readonly key: string,
    value: unknown,
    expected: string,
  ) {
    super('EDGEMESH_INVALID_OPTION', `option ${key}: ${JSON.stringify(value)} is not ${expected}`);
  }
}
