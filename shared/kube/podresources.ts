/**
 * The devices kubelet assigned to a pod, by resource name, from kubelet's PodResources API
 * (`v1.PodResourcesLister/List` on its pod-resources socket): what multus hands a delegate as its
 * deviceID when the NetworkAttachmentDefinition names a `k8s.v1.cni.cncf.io/resourceName`.
 *
 * Behaves as upstream multus v4.3.0 (`pkg/kubeletclient/kubeletclient.go` GetPodResourceMap, and
 * `pkg/types/types.go` SortDeviceIDs): one List; for the pod with that namespace and name, every
 * container's device-plugin devices appended under their resource name, and every DRA claim's CDI
 * devices (the part after "=" of each CDI name; a name without exactly one "=" is skipped, which
 * upstream only logs) under the claim's name; then each list sorted, so that the n-th delegate of
 * a resource gets the same device whichever program asks. Upstream waits 10 s to connect and 10 s
 * for the answer and takes answers up to 16 MiB; here one deadline bounds both.
 *
 * Not done here: upstream falls back to kubelet's device-plugin checkpoint file when the socket is
 * absent; this module reports the absence (PodResourcesSocketAbsentError) and leaves the choice to
 * the caller.
 *
 * Messages: k8s.io/kubelet `pkg/apis/podresources/v1/api.proto` (v0.36.3).
 */
import { GrpcStatusError, GrpcTransportError, grpcUnary } from "./grpc.ts";
import { type FieldKey, ProtobufError, ProtobufReader, WireType } from "./protobuf.ts";

/** kubelet's default: `<root-dir>/pod-resources/kubelet.sock`, root-dir /var/lib/kubelet. */
export const POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock";

const LIST_METHOD = "/v1.PodResourcesLister/List";
/** Upstream multus' defaultPodResourcesMaxSize. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Any failure to learn a pod's devices; the subclasses say which. A malformed answer is this class itself. */
export class PodResourcesError extends Error {
  constructor(message: string) {
    super(message);
    // Literal names, here and below: the executable is minified, class names are not kept.
    this.name = "PodResourcesError";
  }
}

/** No socket at the path: kubelet is not running there, or its PodResources API is off. */
export class PodResourcesSocketAbsentError extends PodResourcesError {
  constructor(readonly socket: string) {
    super(`kubelet's pod-resources socket is absent at ${socket}`);
    this.name = "PodResourcesSocketAbsentError";
  }
}

/** The socket is there but no answer came: refused, broken, or not before the deadline. */
export class PodResourcesUnavailableError extends PodResourcesError {
  constructor(
    message: string,
    readonly timedOut: boolean,
  ) {
    super(message);
    this.name = "PodResourcesUnavailableError";
  }
}

/** kubelet answered List with a gRPC status other than OK. */
export class PodResourcesStatusError extends PodResourcesError {
  constructor(
    readonly status: number,
    readonly grpcMessage: string,
  ) {
    super(`kubelet's PodResources List failed: grpc-status ${status}${grpcMessage ? `, grpc-message: ${grpcMessage}` : ""}`);
    this.name = "PodResourcesStatusError";
  }
}

export interface PodDeviceOptions {
  /** kubelet's pod-resources socket; POD_RESOURCES_SOCKET when absent. */
  socket?: string;
  /** Epoch milliseconds by which the answer must be in. */
  deadline: number;
}

/**
 * Resource name (or DRA claim name) → the device ids kubelet assigned to the pod, sorted. A pod
 * kubelet does not know, or one without devices, gives an empty map.
 */
export async function podDeviceIds(options: PodDeviceOptions, namespace: string, name: string): Promise<Map<string, string[]>> {
  if (namespace === "" || name === "") throw new PodResourcesError("a pod's devices need its namespace and name, and one is empty");
  const socket = options.socket ?? POD_RESOURCES_SOCKET;
  let answer: Uint8Array;
  try {
    // ListPodResourcesRequest has no fields: its encoding is empty.
    answer = await grpcUnary({ socket, method: LIST_METHOD, request: new Uint8Array(0), deadline: options.deadline, maxResponseBytes: MAX_RESPONSE_BYTES });
  } catch (err) {
    if (err instanceof GrpcTransportError) {
      if (err.errno === "ENOENT") throw new PodResourcesSocketAbsentError(socket);
      throw new PodResourcesUnavailableError(`kubelet's pod-resources socket ${socket}: ${err.message}`, err.timedOut);
    }
    if (err instanceof GrpcStatusError) throw new PodResourcesStatusError(err.status, err.grpcMessage);
    throw err;
  }
  let pods: PodResources[];
  try {
    pods = decodeListPodResourcesResponse(answer);
  } catch (err) {
    if (err instanceof ProtobufError) throw new PodResourcesError(`kubelet's PodResources List answer is malformed: ${err.message}`);
    throw err;
  }
  return deviceIdsOf(pods, namespace, name);
}

/** PodResources, with what multus reads of it. */
export interface PodResources {
  name: string;
  namespace: string;
  containers: ContainerResources[];
}

interface ContainerResources {
  name: string;
  devices: ContainerDevices[];
  dynamicResources: DynamicResource[];
}

interface ContainerDevices {
  resourceName: string;
  deviceIds: string[];
}

/** DynamicResource, its ClaimResources' CDI device names flattened in order. */
interface DynamicResource {
  claimName: string;
  claimNamespace: string;
  cdiDevices: string[];
}

/** The pod's devices by resource or claim name, each list sorted (upstream multus' GetPodResourceMap). */
export function deviceIdsOf(pods: PodResources[], namespace: string, name: string): Map<string, string[]> {
  const byResource = new Map<string, string[]>();
  const add = (key: string, ids: string[]) => {
    const list = byResource.get(key);
    if (list) list.push(...ids);
    else byResource.set(key, [...ids]);
  };
  for (const pod of pods) {
    if (pod.name !== name || pod.namespace !== namespace) continue;
    for (const container of pod.containers) {
      for (const devices of container.devices) add(devices.resourceName, devices.deviceIds);
      for (const claim of container.dynamicResources) {
        add(
          claim.claimName,
          claim.cdiDevices.flatMap((cdi) => {
            const parts = cdi.split("=");
            return parts.length === 2 ? [parts[1] ?? ""] : [];
          }),
        );
      }
    }
  }
  for (const ids of byResource.values()) ids.sort(compareBytes);
  return byResource;
}

/** Go's sort.Strings order: by UTF-8 bytes, which is code point order (not UTF-16 units'). */
function compareBytes(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const difference = (left[i]?.codePointAt(0) ?? 0) - (right[i]?.codePointAt(0) ?? 0);
    if (difference !== 0) return difference;
  }
  return left.length - right.length;
}

// The decoders: field numbers from api.proto; fields not listed (topology, cpu_ids, memory, and
// any a later kubelet adds) are skipped whatever their wire type.

/** ListPodResourcesResponse { repeated PodResources pod_resources = 1; } */
export function decodeListPodResourcesResponse(bytes: Uint8Array): PodResources[] {
  const pods: PodResources[] = [];
  readFields(bytes, (reader, key) => {
    if (key.field !== 1) return false;
    reader.expect(key, WireType.bytes);
    pods.push(decodePodResources(reader.bytesField()));
    return true;
  });
  return pods;
}

/** PodResources { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; } */
function decodePodResources(bytes: Uint8Array): PodResources {
  const pod: PodResources = { name: "", namespace: "", containers: [] };
  readFields(bytes, (reader, key) => {
    switch (key.field) {
      case 1:
        reader.expect(key, WireType.bytes);
        pod.name = reader.string();
        return true;
      case 2:
        reader.expect(key, WireType.bytes);
        pod.namespace = reader.string();
        return true;
      case 3:
        reader.expect(key, WireType.bytes);
        pod.containers.push(decodeContainerResources(reader.bytesField()));
        return true;
      default:
        return false;
    }
  });
  return pod;
}

/** ContainerResources { string name = 1; repeated ContainerDevices devices = 2; cpu_ids = 3; memory = 4; repeated DynamicResource dynamic_resources = 5; } */
function decodeContainerResources(bytes: Uint8Array): ContainerResources {
  const container: ContainerResources = { name: "", devices: [], dynamicResources: [] };
  readFields(bytes, (reader, key) => {
    switch (key.field) {
      case 1:
        reader.expect(key, WireType.bytes);
        container.name = reader.string();
        return true;
      case 2:
        reader.expect(key, WireType.bytes);
        container.devices.push(decodeContainerDevices(reader.bytesField()));
        return true;
      case 5:
        reader.expect(key, WireType.bytes);
        container.dynamicResources.push(decodeDynamicResource(reader.bytesField()));
        return true;
      default:
        return false;
    }
  });
  return container;
}

/** ContainerDevices { string resource_name = 1; repeated string device_ids = 2; TopologyInfo topology = 3; } */
function decodeContainerDevices(bytes: Uint8Array): ContainerDevices {
  const devices: ContainerDevices = { resourceName: "", deviceIds: [] };
  readFields(bytes, (reader, key) => {
    switch (key.field) {
      case 1:
        reader.expect(key, WireType.bytes);
        devices.resourceName = reader.string();
        return true;
      case 2:
        reader.expect(key, WireType.bytes);
        devices.deviceIds.push(reader.string());
        return true;
      default:
        return false;
    }
  });
  return devices;
}

/** DynamicResource { string claim_name = 2; string claim_namespace = 3; repeated ClaimResource claim_resources = 4; } (1 is a tombstone) */
function decodeDynamicResource(bytes: Uint8Array): DynamicResource {
  const claim: DynamicResource = { claimName: "", claimNamespace: "", cdiDevices: [] };
  readFields(bytes, (reader, key) => {
    switch (key.field) {
      case 2:
        reader.expect(key, WireType.bytes);
        claim.claimName = reader.string();
        return true;
      case 3:
        reader.expect(key, WireType.bytes);
        claim.claimNamespace = reader.string();
        return true;
      case 4:
        reader.expect(key, WireType.bytes);
        // ClaimResource { repeated CDIDevice cdi_devices = 1; ... }, CDIDevice { string name = 1; }
        readFields(reader.bytesField(), (claimResource, claimKey) => {
          if (claimKey.field !== 1) return false;
          claimResource.expect(claimKey, WireType.bytes);
          readFields(claimResource.bytesField(), (cdi, cdiKey) => {
            if (cdiKey.field !== 1) return false;
            cdi.expect(cdiKey, WireType.bytes);
            claim.cdiDevices.push(cdi.string());
            return true;
          });
          return true;
        });
        return true;
      default:
        return false;
    }
  });
  return claim;
}

/** Walks a message's fields; `read` returns false for a field it does not take, which is then skipped. */
function readFields(bytes: Uint8Array, read: (reader: ProtobufReader, key: FieldKey) => boolean): void {
  const reader = new ProtobufReader(bytes);
  for (let key = reader.next(); key !== undefined; key = reader.next()) {
    if (!read(reader, key)) reader.skip(key);
  }
}
