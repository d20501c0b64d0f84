/**
 * The Kubernetes calls multus makes, over the project's own client (one connection per process):
 * the pod (polled briefly, as upstream's thin plugin does), NetworkAttachmentDefinitions, a
 * node's labels (for the NAD nodeSelector), the `network-status` annotation (GET then PUT
 * `pods/status`, retried on conflict, as upstream, so upstream's ClusterRole suffices), and core
 * v1 events, written before the process exits.
 */
import { env } from "node:process";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { messageOf } from "../../shared/errors.ts";
import { KubeApiError, KubeClient, KubeUnavailableError } from "../../shared/kube/client.ts";
import { KubeconfigError, inClusterConnection, loadKubeconfig } from "../../shared/kube/config.ts";
import { NETWORK_STATUS_ANNOTATION } from "./annotations.ts";
import type { Nad } from "./nad.ts";

/** The parts of a pod multus reads. */
export interface Pod {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion?: string;
    annotations?: Record<string, string>;
  };
  spec?: { nodeName?: string };
}

interface NadObject {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec?: { config?: string };
}

interface NodeObject {
  metadata: { labels?: Record<string, string> };
}

/**
 * upstream `GetPod`: retried every 250 ms for 2.5 s while the API refuses or fails. Unlike
 * upstream, a GET is not cut short (upstream: 250 ms each): on a node starting many pods at once,
 * the process' first request (TLS included) can take seconds of a starved CPU, and a cut GET fails
 * the sandbox, whose retry costs the node more than the wait. A GET waits within the ADD's API time.
 */
const POD_POLL_MS = 250;
const POD_POLL_WINDOW_MS = 2500;
/** upstream `SetNetworkStatus`: client-go's DefaultRetry, 5 tries on a conflict. */
const STATUS_TRIES = 5;
const STATIC_POD_SOURCE = "kubernetes.io/config.source";

const NAD_API = "/apis/k8s.cni.cncf.io/v1";

/** What GET pod found: the pod, or that it is gone (a pod deleted before its sandbox). */
export type PodLookup = { pod: Pod } | { gone: true };

export class MultusApi {
  private constructor(private readonly client: KubeClient) {}

  /**
   * The client the conf names: `kubeconfig`, else in-cluster credentials when the service
   * environment is set, else none (only inline `delegates` work then).
   */
  static async open(kubeconfig: string, deadline: number): Promise<MultusApi | undefined> {
    try {
      if (kubeconfig !== "") return new MultusApi(new KubeClient(await loadKubeconfig(kubeconfig), { deadline }));
      if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) return new MultusApi(new KubeClient(inClusterConnection(env), { deadline }));
      return undefined;
    } catch (err) {
      if (err instanceof KubeconfigError) throw new CniError(ErrorCode.InvalidConfig, `error getting k8s client: ${err.message}`);
      throw err;
    }
  }

  get requests(): number {
    return this.client.requests;
  }

  close(): void {
    this.client.close();
  }

  /** Moves the deadline later: a failed ADD still rolls back and reports. */
  extendDeadline(until: number): void {
    this.client.extendDeadline(until);
  }

  /** GET the pod, retrying while the API is unreachable for upstream's poll window. */
  async pod(namespace: string, name: string): Promise<PodLookup> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
    const until = Date.now() + POD_POLL_WINDOW_MS;
    for (;;) {
      try {
        const pod = await this.client.get<Pod>(path);
        return pod === undefined ? { gone: true } : { pod };
      } catch (err) {
        if (!(err instanceof KubeUnavailableError) || Date.now() + POD_POLL_MS >= until) throw apiError(`error waiting for pod ${namespace}/${name}`, err);
        await sleep(POD_POLL_MS);
      }
    }
  }

  /** A NetworkAttachmentDefinition; undefined when it does not exist. */
  async nad(namespace: string, name: string): Promise<Nad | undefined> {
    const path = `${NAD_API}/namespaces/${encodeURIComponent(namespace)}/network-attachment-definitions/${encodeURIComponent(name)}`;
    let object: NadObject | undefined;
    try {
      object = await this.client.get<NadObject>(path);
    } catch (err) {
      throw apiError(`cannot get NetworkAttachmentDefinition ${namespace}/${name}`, err);
    }
    if (object === undefined) return undefined;
    const nad: Nad = { namespace, name };
    if (typeof object.spec?.config === "string") nad.config = object.spec.config;
    if (object.metadata.annotations) nad.annotations = object.metadata.annotations;
    return nad;
  }

  /** The labels of a node (for a NAD's nodeSelector); the node must exist. */
  async nodeLabels(name: string): Promise<Record<string, string>> {
    let node: NodeObject | undefined;
    try {
      node = await this.client.get<NodeObject>(`/api/v1/nodes/${encodeURIComponent(name)}`);
    } catch (err) {
      throw apiError(`cannot get node ${name}`, err);
    }
    if (node === undefined) throw new CniError(ErrorCode.InvalidConfig, `node ${name} (the pod's spec.nodeName) does not exist`);
    return node.metadata.labels ?? {};
  }

  /**
   * Sets the pod's `network-status` annotation with PUT `pods/status` (upstream's verb), first on
   * the pod as ADD read it, then, on a conflict, on a fresh GET. A pod deleted meanwhile is not an
   * error (upstream tolerates it too).
   */
  async writeNetworkStatus(read: Pod, uid: string, text: string): Promise<void> {
    const { namespace, name } = read.metadata;
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
    let pod: Pod | undefined = read;
    for (let attempt = 1; ; attempt++) {
      try {
        if (pod === undefined) pod = await this.client.get<Pod>(path);
        if (pod === undefined) return;
        if (uid !== "" && pod.metadata.uid !== uid && !isStaticPod(pod)) {
          throw new CniError(ErrorCode.InvalidConfig, `expected pod UID ${JSON.stringify(uid)} but got ${JSON.stringify(pod.metadata.uid)} from Kube API`);
        }
        const annotated = { ...pod, metadata: { ...pod.metadata, annotations: { ...pod.metadata.annotations, [NETWORK_STATUS_ANNOTATION]: text } } };
        await this.client.replace(`${path}/status`, annotated);
        return;
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 404) return;
        if (err instanceof KubeApiError && err.status === 409 && attempt < STATUS_TRIES) {
          pod = undefined;
          continue;
        }
        if (err instanceof CniError) throw err;
        throw apiError("error setting the networks status", err);
      }
    }
  }

  /**
   * A core v1 event on the pod (component `multus`, as upstream's). Never fails the request: an
   * event that cannot be written is logged by the caller.
   */
  async event(pod: Pod, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const { namespace, name, uid, resourceVersion } = pod.metadata;
    await this.client.create(`/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, {
      apiVersion: "v1",
      kind: "Event",
      // client-go names events `<object>.<nanoseconds in hex>`; the random tail keeps two processes apart.
      metadata: { name: `${name}.${uniqueSuffix()}`, namespace },
      involvedObject: { apiVersion: "v1", kind: "Pod", namespace, name, uid, ...(resourceVersion ? { resourceVersion } : {}) },
      reason,
      message,
      type,
      source: { component: "multus" },
      reportingComponent: "multus",
      reportingInstance: "",
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  }
}

/** A mirror pod's UID differs from the one kubelet knows (upstream `IsStaticPod`). */
export function isStaticPod(pod: Pod): boolean {
  const source = pod.metadata.annotations?.[STATIC_POD_SOURCE];
  return source !== undefined && source !== "api";
}

/** An API failure as a CNI error: unreachable is "try again later" (11), an answer is kept as said. */
function apiError(what: string, err: unknown): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof KubeUnavailableError) return new CniError(ErrorCode.TryAgainLater, `${what}: Kubernetes API unavailable: ${err.message}`);
  return new CniError(ErrorCode.Internal, `${what}: ${messageOf(err)}`);
}

function uniqueSuffix(): string {
  const nanoseconds = BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(Math.random() * 1_000_000));
  return nanoseconds.toString(16);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
