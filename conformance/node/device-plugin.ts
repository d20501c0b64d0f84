/**
 * A device plugin for a node of conformance/node/node.ts: a gRPC server (Node's HTTP/2 server,
 * h2c on a unix socket in the node's device-plugin directory) that registers one extended
 * resource with kubelet, advertises fixed device ids as healthy and records what kubelet
 * allocates, so that a test knows which device a pod got without asking kubelet.
 *
 * API: k8s.io/kubelet `pkg/apis/deviceplugin/v1beta1/api.proto` (v0.36.3): kubelet's
 * `Registration.Register`, and the plugin's `DevicePlugin` service (GetDevicePluginOptions,
 * ListAndWatch, Allocate; GetPreferredAllocation and PreStartContainer are declared unused in
 * the options, and answered UNIMPLEMENTED).
 *
 * Runs under Node (vitest); the messages through shared/kube/protobuf.ts, the Register call
 * through shared/kube/grpc.ts.
 */
import { type Http2Server, type ServerHttp2Stream, createServer } from "node:http2";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { grpcUnary } from "../../shared/kube/grpc.ts";
import { ProtobufReader, ProtobufWriter } from "../../shared/kube/protobuf.ts";

export interface DevicePlugin {
  /** The device ids of every Allocate call, per container, in the order kubelet asked. */
  allocations: string[][];
  stop(): Promise<void>;
}

export async function startDevicePlugin(o: { devicePluginDir: string; resourceName: string; deviceIds: string[] }): Promise<DevicePlugin> {
  const endpoint = `${o.resourceName.replace(/[^a-zA-Z0-9]/g, "-")}.sock`;
  const socket = join(o.devicePluginDir, endpoint);
  rmSync(socket, { force: true });
  const allocations: string[][] = [];
  const watchers = new Set<ServerHttp2Stream>();

  const server: Http2Server = createServer();
  server.on("stream", (http2Stream, headers) => {
    // A server's streams are ServerHttp2Streams; the types give the event the base class.
    const stream = http2Stream as ServerHttp2Stream;
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {});
    stream.on("end", () => {
      const request = unframe(Buffer.concat(chunks));
      switch (headers[":path"]) {
        case "/v1beta1.DevicePlugin/GetDevicePluginOptions":
          // DevicePluginOptions {}: no PreStartContainer, no GetPreferredAllocation.
          return reply(stream, new Uint8Array(0));
        case "/v1beta1.DevicePlugin/ListAndWatch": {
          // A stream kept open: one ListAndWatchResponse { devices: [{ ID, health: "Healthy" }] }.
          const devices = new ProtobufWriter();
          for (const id of o.deviceIds) devices.message(1, new ProtobufWriter().string(1, id).string(2, "Healthy"));
          stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
          // Ended by stop(): with a status, which kubelet expects of a stream that ends.
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          stream.write(frame(devices.finish()));
          watchers.add(stream);
          return;
        }
        case "/v1beta1.DevicePlugin/Allocate": {
          // AllocateRequest { repeated ContainerAllocateRequest container_requests = 1 { repeated string devices_ids = 1 } }
          const response = new ProtobufWriter();
          for (const ids of readRepeatedMessages(request, 1)) {
            allocations.push(readRepeatedStrings(ids, 1));
            // ContainerAllocateResponse {}: nothing to mount, no environment.
            response.message(1, new ProtobufWriter());
          }
          return reply(stream, response.finish());
        }
        default:
          stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
      }
    });
  });
  await new Promise<void>((done) => server.listen(socket, done));

  // RegisterRequest { version = 1; endpoint = 2; resource_name = 3; options = 4 }, to kubelet.
  await grpcUnary({
    socket: join(o.devicePluginDir, "kubelet.sock"),
    method: "/v1beta1.Registration/Register",
    request: new ProtobufWriter().string(1, "v1beta1").string(2, endpoint).string(3, o.resourceName).message(4, new ProtobufWriter()).finish(),
    deadline: Date.now() + 10_000,
    maxResponseBytes: 1024,
  });

  return {
    allocations,
    async stop() {
      for (const stream of watchers) stream.end();
      await new Promise((done) => server.close(done));
      rmSync(socket, { force: true });
    },
  };
}

function reply(stream: ServerHttp2Stream, message: Uint8Array): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(frame(message));
}

function frame(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

function unframe(body: Buffer): Uint8Array {
  return body.length >= 5 ? body.subarray(5, 5 + body.readUInt32BE(1)) : new Uint8Array(0);
}

function readRepeatedMessages(bytes: Uint8Array, field: number): Uint8Array[] {
  const found: Uint8Array[] = [];
  const reader = new ProtobufReader(bytes);
  for (let key = reader.next(); key !== undefined; key = reader.next()) {
    if (key.field === field) found.push(reader.bytesField());
    else reader.skip(key);
  }
  return found;
}

function readRepeatedStrings(bytes: Uint8Array, field: number): string[] {
  return readRepeatedMessages(bytes, field).map((b) => new TextDecoder().decode(b));
}
