/**
 * A gRPC server for bench/h2.sh (@grpc/grpc-js): `/test.Echo/Unary` answers each request with its
 * own bytes (no protobuf: the messages are raw bytes, framed by gRPC).
 * Usage: h2-grpc-backend.ts PORT
 */
import * as grpc from '@grpc/grpc-js';

const port = Number(process.argv[2]);
const raw = (b: Buffer) => b;
const server = new grpc.Server();
server.addService(
  {
    Unary: {
      path: '/test.Echo/Unary',
      requestStream: false,
      responseStream: false,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    },
  },
  {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, call.request),
  },
);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => {
  if (e) throw e;
  console.log(`ready grpc=${port}`);
});
process.on('SIGTERM', () => process.exit(0));
