/**
 * The PodResources client: the protobuf decoding on bytes written out by hand here (not by our
 * encoder), the device map as upstream multus v4.3.0 builds it, and the gRPC call against a real
 * HTTP/2 server (Node's, on a unix socket) answering as kubelet does, run both in this Node
 * process and under Bun, the plugins' runtime. The call against a real kubelet is in
 * conformance/podresources.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type Http2Server, type ServerHttp2Stream, createServer } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  POD_RESOURCES_SOCKET,
  type PodResources,
  PodResourcesError,
  PodResourcesSocketAbsentError,
  PodResourcesStatusError,
  PodResourcesUnavailableError,
  decodeListPodResourcesResponse,
  deviceIdsOf,
  podDeviceIds,
} from "./podresources.ts";
import { ProtobufError, ProtobufReader, ProtobufWriter } from "./protobuf.ts";

// Hand encoding, independent of protobuf.ts: a key is (field << 3) | wire type, one byte for the
// field numbers used here (checked, not assumed); a length is a varint, 7 bits a byte, low first.
const byte = (n: number) => {
  if (n < 0 || n > 127) throw new Error(`${n} is not one varint byte`);
  return n;
};
const varint = (n: number): number[] => (n < 128 ? [n] : [(n & 0x7f) | 0x80, ...varint(n >>> 7)]);
const ld = (field: number, body: number[]) => [byte((field << 3) | 2), ...varint(body.length), ...body];
const str = (field: number, s: string) => ld(field, [...Buffer.from(s, "utf8")]);
const hex = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ""), "hex"));

/** ContainerDevices / ContainerResources / PodResources / ListPodResourcesResponse, by hand. */
const devicesMsg = (resource: string, ids: string[], extra: number[] = []) => [...str(1, resource), ...ids.flatMap((id) => str(2, id)), ...extra];
const containerMsg = (name: string, devices: number[][], extra: number[] = []) => [...str(1, name), ...devices.flatMap((d) => ld(2, d)), ...extra];
const podMsg = (name: string, namespace: string, containers: number[][], extra: number[] = []) => [
  ...str(1, name),
  ...str(2, namespace),
  ...containers.flatMap((c) => ld(3, c)),
  ...extra,
];
const listMsg = (pods: number[][]) => Uint8Array.from(pods.flatMap((p) => ld(1, p)));

describe("ListPodResourcesResponse decoding", () => {
  test("bytes as Go's protobuf writes them: pod, namespace, container, devices", () => {
    // pod_resources { name "p" namespace "n" containers { name "c" devices { resource_name "a/b" device_ids "d1" device_ids "d0" } } }
    const wire = hex("0a 1a 0a01 70 1201 6e 1a12 0a01 63 120d 0a03 612f62 1202 6431 1202 6430");
    expect(decodeListPodResourcesResponse(wire)).toEqual([
      {
        name: "p",
        namespace: "n",
        containers: [{ name: "c", devices: [{ resourceName: "a/b", deviceIds: ["d1", "d0"] }], dynamicResources: [] }],
      },
    ]);
  });

  test("an empty answer (no pods) is an empty list", () => {
    expect(decodeListPodResourcesResponse(new Uint8Array(0))).toEqual([]);
  });

  test("fields we do not read, of every wire type, are skipped at every level", () => {
    const unknown = [
      ...[byte((9 << 3) | 0), 0xff, 0xff, 0x03], // varint, three bytes
      ...[byte((10 << 3) | 1), 1, 2, 3, 4, 5, 6, 7, 8], // fixed64
      ...[byte((11 << 3) | 5), 1, 2, 3, 4], // fixed32
      ...str(12, "later field"), // length-delimited
      // group 13 { varint 1: 5; group 14 { } } (deprecated, still legal on the wire)
      ...[byte((13 << 3) | 3), byte((1 << 3) | 0), 5, byte((14 << 3) | 3), byte((14 << 3) | 4), byte((13 << 3) | 4)],
    ];
    const topology = ld(3, ld(1, [byte((1 << 3) | 0), 1])); // ContainerDevices.topology { nodes { ID: 1 } }
    const cpuIds = ld(3, [2, 3]); // ContainerResources.cpu_ids, packed
    const memory = ld(4, [...str(1, "memory"), byte((2 << 3) | 0), 0x80, 0x80, 0x04]); // ContainerResources.memory
    const wire = listMsg([
      podMsg("pod", "ns", [containerMsg("c", [devicesMsg("example.com/nic", ["x"], [...topology, ...unknown])], [...cpuIds, ...memory, ...unknown])], unknown),
      unknown,
    ]);
    const withTopLevelUnknown = Uint8Array.from([...unknown, ...wire, ...unknown]);
    expect(decodeListPodResourcesResponse(withTopLevelUnknown)).toEqual([
      { name: "pod", namespace: "ns", containers: [{ name: "c", devices: [{ resourceName: "example.com/nic", deviceIds: ["x"] }], dynamicResources: [] }] },
      { name: "", namespace: "", containers: [] },
    ]);
  });

  test("a DRA claim: its name and the CDI device names of every claim resource, in order", () => {
    const cdi = (name: string) => ld(1, str(1, name));
    const claimResource = (names: string[]) => ld(4, [...names.flatMap(cdi), ...str(2, "driver"), ...str(3, "pool"), ...str(4, "dev")]);
    const claim = [
      ...str(1, "tombstoned class"),
      ...str(2, "claim-a"),
      ...str(3, "ns"),
      ...claimResource(["v.com/x=one", "v.com/x=two"]),
      ...claimResource(["v.com/y=three"]),
    ];
    const wire = listMsg([podMsg("p", "ns", [containerMsg("c", [], ld(5, claim))])]);
    expect(decodeListPodResourcesResponse(wire)[0]?.containers[0]?.dynamicResources).toEqual([
      { claimName: "claim-a", claimNamespace: "ns", cdiDevices: ["v.com/x=one", "v.com/x=two", "v.com/y=three"] },
    ]);
  });

  test("a later string of a singular field wins, as in every protobuf decoder", () => {
    const wire = listMsg([[...str(1, "first"), ...str(1, "second"), ...str(2, "ns")]]);
    expect(decodeListPodResourcesResponse(wire)[0]?.name).toBe("second");
  });

  const whole = listMsg([podMsg("pod", "ns", [containerMsg("c", [devicesMsg("r", ["d"])])])]);

  test.each([
    ["cut inside the outer message", whole.subarray(0, whole.length - 1)],
    ["cut inside a nested length", whole.subarray(0, 1)],
    ["a length past the end", Uint8Array.from([byte((1 << 3) | 2), 5, 1, 2])],
    ["a varint cut short", Uint8Array.from([byte((1 << 3) | 0), 0x80])],
    ["a fixed64 cut short", Uint8Array.from([byte((9 << 3) | 1), 1, 2, 3])],
    ["a fixed32 cut short", Uint8Array.from([byte((9 << 3) | 5), 1])],
    ["a group never closed", Uint8Array.from([byte((9 << 3) | 3), byte((1 << 3) | 0), 1])],
  ])("truncated input is refused: %s", (_, wire) => {
    expect(() => decodeListPodResourcesResponse(wire)).toThrow(ProtobufError);
  });

  test("every proper prefix of a message whose last field is nested is refused", () => {
    for (let cut = 1; cut < whole.length; cut++) expect(() => decodeListPodResourcesResponse(whole.subarray(0, cut)), `cut at ${cut}`).toThrow(ProtobufError);
  });

  test.each([
    ["wire type 6", [byte((9 << 3) | 6), 0]],
    ["wire type 7", [byte((9 << 3) | 7), 0]],
    ["field number 0", [0, 0]],
    ["an end of group outside a group", [byte((9 << 3) | 4)]],
    ["a group closed under another number", [byte((9 << 3) | 3), byte((8 << 3) | 4)]],
    ["a varint longer than 10 bytes", [byte((9 << 3) | 0), ...Array(10).fill(0x80), 0]],
    ["pod_resources as a varint", [byte((1 << 3) | 0), 1]],
    ["a name that is not UTF-8", ld(1, [byte((1 << 3) | 2), 2, 0xc3, 0x28])],
  ])("a malformed message is refused: %s", (_, wire) => {
    expect(() => decodeListPodResourcesResponse(Uint8Array.from(wire))).toThrow(ProtobufError);
  });

  test("a varint of several bytes: 300 is ac 02", () => {
    const reader = new ProtobufReader(hex("ac02"));
    expect(reader.varint()).toBe(300);
  });
});

describe("ProtobufWriter (the device plugin's messages in the conformance test)", () => {
  test("fields as a Go decoder expects them", () => {
    const inner = new ProtobufWriter().string(1, "d1").string(2, "Healthy");
    const written = new ProtobufWriter().message(1, inner).bool(2, true).string(3, "ä").finish();
    expect(Buffer.from(written).toString("hex")).toBe(`0a0d${"0a026431"}${"1207"}${Buffer.from("Healthy").toString("hex")}1001${"1a02c3a4"}`);
  });

  test("a length of 300 takes two varint bytes", () => {
    const written = new ProtobufWriter().string(1, "x".repeat(300)).finish();
    expect([...written.subarray(0, 3)]).toEqual([0x0a, 0xac, 0x02]);
    expect(written.length).toBe(303);
  });
});

describe("a pod's devices (upstream multus' GetPodResourceMap)", () => {
  const pod = (namespace: string, name: string, containers: PodResources["containers"]): PodResources => ({ name, namespace, containers });
  const container = (devices: [string, string[]][], claims: [string, string[]][] = []) => ({
    name: "c",
    devices: devices.map(([resourceName, deviceIds]) => ({ resourceName, deviceIds })),
    dynamicResources: claims.map(([claimName, cdiDevices]) => ({ claimName, claimNamespace: "ns", cdiDevices })),
  });

  test("every container's devices of a resource, joined and sorted; other pods' ignored", () => {
    const pods = [
      pod("ns", "other", [container([["example.com/nic", ["z0"]]])]),
      pod("other-ns", "web", [container([["example.com/nic", ["z1"]]])]),
      pod("ns", "web", [
        container([["example.com/nic", ["0000:03:00.2", "0000:03:00.10"]]]),
        container([
          ["example.com/nic", ["0000:03:00.1"]],
          ["example.com/gpu", ["g"]],
        ]),
      ]),
    ];
    expect(deviceIdsOf(pods, "ns", "web")).toEqual(
      new Map([
        ["example.com/nic", ["0000:03:00.1", "0000:03:00.10", "0000:03:00.2"]],
        ["example.com/gpu", ["g"]],
      ]),
    );
  });

  test("sorted by UTF-8 bytes as Go's sort.Strings, not by UTF-16 units", () => {
    // U+FF5E is one UTF-16 unit above a surrogate pair's first (0xD83D), but below U+1F600 in UTF-8 order.
    const pods = [pod("ns", "p", [container([["r", ["\u{1F600}", "\uFF5E", "b", "a"]]])])];
    expect(deviceIdsOf(pods, "ns", "p").get("r")).toEqual(["a", "b", "\uFF5E", "\u{1F600}"]);
  });

  test("DRA claims under the claim's name: the id after '=', names without exactly one '=' skipped", () => {
    const pods = [pod("ns", "p", [container([], [["claim", ["v.com/x=dev2", "no-equals", "v.com/x=dev1", "a=b=c"]]])])];
    expect(deviceIdsOf(pods, "ns", "p")).toEqual(new Map([["claim", ["dev1", "dev2"]]]));
  });

  test("a pod kubelet does not list has no devices", () => {
    expect(deviceIdsOf([pod("ns", "p", [container([["r", ["d"]]])])], "ns", "q").size).toBe(0);
  });

  test("the input lists are left as they were", () => {
    const ids = ["b", "a"];
    deviceIdsOf([pod("ns", "p", [container([["r", ids]])])], "ns", "p");
    expect(ids).toEqual(["b", "a"]);
  });
});

// The gRPC call against a real HTTP/2 server on a unix socket, answering as kubelet's grpc-go does.

type Behaviour = (stream: ServerHttp2Stream) => void;

const dir = mkdtempSync(join(tmpdir(), "podresources-test-"));
const servers: Http2Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((done) => server.close(done))));
  rmSync(dir, { recursive: true, force: true });
});

/** The requests each socket's server saw: path, headers and body. */
const seen = new Map<string, { path: string; headers: Record<string, unknown>; body: Buffer }[]>();

async function serve(name: string, behaviour: Behaviour): Promise<string> {
  const socket = join(dir, `${name}.sock`);
  const server = createServer();
  seen.set(socket, []);
  // A server's streams are ServerHttp2Streams; the types give the event the base class.
  server.on("stream", (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.get(socket)?.push({ path: String(headers[":path"]), headers: { ...headers }, body });
      behaviour(stream as ServerHttp2Stream);
    });
  });
  await new Promise<void>((done) => server.listen(socket, done));
  servers.push(server);
  return socket;
}

/** gRPC's framing: not compressed, the length big-endian, the message. */
function grpcFrame(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

const answer =
  (message: Uint8Array): Behaviour =>
  (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "" }));
    // In two pieces, as a large answer arrives in several DATA frames.
    const framed = grpcFrame(message);
    stream.write(framed.subarray(0, 3));
    stream.end(framed.subarray(3));
  };

const LISTED = listMsg([
  podMsg("web", "ns", [
    containerMsg("app", [devicesMsg("example.com/nic", ["nic-3", "nic-1"])]),
    containerMsg("side", [devicesMsg("example.com/nic", ["nic-2"])]),
  ]),
  podMsg("db", "ns", [containerMsg("app", [devicesMsg("example.com/nic", ["nic-9"])])]),
]);

/** 5000 pods, ~300 KB: past HTTP/2's initial 64 KiB window, so the client must grant more. */
const MANY = listMsg(
  Array.from({ length: 5000 }, (_, i) => podMsg(`pod-${i}`, "busy", [containerMsg("app", [devicesMsg("example.com/nic", [`nic-${i}-b`, `nic-${i}-a`])])])),
);

let listing: string;
let large: string;
let failing: string;
let silent: string;
let notGrpc: string;
let twoMessages: string;
let refused: string;
const absent = join(dir, "absent.sock");

beforeAll(async () => {
  listing = await serve("listing", answer(LISTED));
  large = await serve("large", answer(MANY));
  failing = await serve("failing", (stream) =>
    // A trailers-only answer, as grpc-go sends an error before any message; the message percent-encoded.
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", "grpc-status": "7", "grpc-message": "not%20allowed%3A%20%C3%A4" },
      { endStream: true },
    ),
  );
  silent = await serve("silent", () => {});
  notGrpc = await serve("not-grpc", (stream) => {
    stream.respond({ ":status": 404, "content-type": "text/plain" });
    stream.end("not found");
  });
  twoMessages = await serve("two", (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.concat([grpcFrame(LISTED), grpcFrame(LISTED)]));
  });
  // A file where the socket should be, with nobody listening: connect is refused.
  refused = join(dir, "refused.sock");
  writeFileSync(refused, "");
});

/** The outcome of one podDeviceIds call, comparable across runtimes. */
type Outcome = { devices: [string, string[]][] } | { error: string; message: string; timedOut?: boolean };

async function inNode(socket: string, namespace: string, name: string, timeoutMs = 5000): Promise<Outcome> {
  try {
    return { devices: [...(await podDeviceIds({ socket, deadline: Date.now() + timeoutMs }, namespace, name))] };
  } catch (err) {
    if (!(err instanceof PodResourcesError)) throw err;
    return { error: err.name, message: err.message, ...(err instanceof PodResourcesUnavailableError ? { timedOut: err.timedOut } : {}) };
  }
}

const BUN = join(import.meta.dirname, "../../node_modules/.bin/bun");

/** The same call in a `bun` process (the plugins' runtime), running this very module. */
function inBun(socket: string, namespace: string, name: string, timeoutMs = 5000): Promise<Outcome> {
  const script = `
    const m = await import(process.argv[1]);
    const [socket, namespace, name, timeout] = process.argv.slice(2);
    try {
      console.log(JSON.stringify({ devices: [...(await m.podDeviceIds({ socket, deadline: Date.now() + Number(timeout) }, namespace, name))] }));
    } catch (err) {
      if (!(err instanceof m.PodResourcesError)) throw err;
      console.log(JSON.stringify({ error: err.name, message: err.message, ...(err instanceof m.PodResourcesUnavailableError ? { timedOut: err.timedOut } : {}) }));
    }`;
  const args = ["-e", script, join(import.meta.dirname, "podresources.ts"), socket, namespace, name, String(timeoutMs)];
  return new Promise((resolve, reject) =>
    execFile(BUN, args, { encoding: "utf8", timeout: 20_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

describe.each([
  ["Node", inNode],
  ["Bun", inBun],
])("the List call over a unix socket (%s)", (_, call) => {
  test("the pod's devices from every container, sorted; the request as kubelet's server wants it", async () => {
    const before = seen.get(listing)?.length ?? 0;
    expect(await call(listing, "ns", "web")).toEqual({ devices: [["example.com/nic", ["nic-1", "nic-2", "nic-3"]]] });
    const request = seen.get(listing)?.[before];
    expect(request?.path).toBe("/v1.PodResourcesLister/List");
    expect(request?.headers["content-type"]).toBe("application/grpc");
    expect(request?.headers.te).toBe("trailers");
    expect(String(request?.headers["grpc-timeout"])).toMatch(/^\d{1,8}m$/);
    // An empty ListPodResourcesRequest: the 5-byte prefix and nothing else.
    expect([...(request?.body ?? [])]).toEqual([0, 0, 0, 0, 0]);
  });

  test("a large answer in many DATA frames: the last pod's devices", async () => {
    expect(MANY.length).toBeGreaterThan(200_000);
    expect(await call(large, "busy", "pod-4999")).toEqual({ devices: [["example.com/nic", ["nic-4999-a", "nic-4999-b"]]] });
  });

  test("a pod kubelet does not list: no devices", async () => {
    expect(await call(listing, "ns", "nobody")).toEqual({ devices: [] });
  });

  test("no socket at the path: the absent error naming it", async () => {
    expect(await call(absent, "ns", "web")).toEqual({
      error: "PodResourcesSocketAbsentError",
      message: `kubelet's pod-resources socket is absent at ${absent}`,
    });
  });

  test("nobody listening on the socket: unavailable, not a timeout", async () => {
    const outcome = await call(refused, "ns", "web");
    expect(outcome).toMatchObject({ error: "PodResourcesUnavailableError", timedOut: false });
    expect("message" in outcome && outcome.message).toContain(refused);
  });

  test("a server that never answers: unavailable at the deadline", async () => {
    const started = Date.now();
    const outcome = await call(silent, "ns", "web", 300);
    expect(outcome).toMatchObject({ error: "PodResourcesUnavailableError", timedOut: true });
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  test("a gRPC error status: its code and decoded message", async () => {
    expect(await call(failing, "ns", "web")).toEqual({
      error: "PodResourcesStatusError",
      message: "kubelet's PodResources List failed: grpc-status 7, grpc-message: not allowed: ä",
    });
  });

  test("an HTTP answer that is no gRPC answer: a status error, not a hang", async () => {
    expect(await call(notGrpc, "ns", "web")).toMatchObject({ error: "PodResourcesStatusError", message: expect.stringContaining("HTTP status 404") });
  });

  test("two messages where one is due: refused", async () => {
    expect(await call(twoMessages, "ns", "web")).toMatchObject({ error: "PodResourcesStatusError", message: expect.stringContaining("grpc-status 13") });
  });
});

test("an empty namespace or name is refused before any call", async () => {
  // The absent socket would say "absent": the refusal comes first.
  await expect(podDeviceIds({ socket: absent, deadline: Date.now() + 1000 }, "", "web")).rejects.toThrow("namespace and name");
  await expect(podDeviceIds({ socket: absent, deadline: Date.now() + 1000 }, "ns", "")).rejects.toThrow("namespace and name");
});

test("the default socket is kubelet's", () => {
  expect(POD_RESOURCES_SOCKET).toBe("/var/lib/kubelet/pod-resources/kubelet.sock");
});

test("the error classes say which failure it was", () => {
  expect(new PodResourcesStatusError(14, "")).toBeInstanceOf(PodResourcesError);
  expect(new PodResourcesSocketAbsentError("/x").socket).toBe("/x");
});
