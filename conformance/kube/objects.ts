/**
 * Reading and clearing whereabouts' objects on a test cluster as its admin, straight over HTTPS:
 * a kubectl process per read costs ~100 ms, a request on a kept-alive connection ~2 ms, and the
 * suites read the pools after almost every plugin call. Also the API server's request counters,
 * which the benchmark reports per ADD.
 *
 * Runs under Node (vitest) and Bun (bench): node: modules only.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "node:https";
import type { Cluster } from "./cluster.ts";

export const WHEREABOUTS_API = "/apis/whereabouts.cni.cncf.io/v1alpha1";
/** Where the plugin keeps its objects: the namespace of the kubeconfig's context. */
export const NAMESPACE = "kube-system";

interface Allocation {
  id: string;
  podref: string;
  ifname?: string;
}

export interface IPPool {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion: string };
  spec: { range: string; allocations: Record<string, Allocation> };
}

export interface Reservation {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; resourceVersion: string };
  spec: { podref: string; ifname?: string; containerid?: string };
}

export class AdminApi {
  private readonly agent: Agent;
  private readonly ca: Buffer;

  constructor(private readonly cluster: Pick<Cluster, "server" | "caFile" | "adminToken">) {
    this.ca = readFileSync(cluster.caFile);
    this.agent = new Agent({ keepAlive: true, maxSockets: 4 });
  }

  /** The parsed body of a 2xx answer; undefined for 404; throws otherwise. */
  async send<T>(method: string, path: string, body?: unknown): Promise<T | undefined> {
    let { status, text } = await this.raw(method, path, body);
    // 429 "storage is (re)initializing": a restarted API server is ready before its custom
    // resources are.
    for (let waited = 0; status === 429 && waited < 20_000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      ({ status, text } = await this.raw(method, path, body));
    }
    if (status === 404) return undefined;
    if (status < 200 || status > 299) throw new Error(`${method} ${path}: ${status} ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  raw(method: string, path: string, body?: unknown, contentType = "application/json"): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = request(
        `${this.cluster.server}${path}`,
        {
          method,
          agent: this.agent,
          ca: this.ca,
          headers: {
            Authorization: `Bearer ${this.cluster.adminToken}`,
            Accept: "application/json",
            ...(body === undefined ? {} : { "Content-Type": contentType }),
          },
          timeout: 30_000,
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  /**
   * Resolves once the whereabouts resources answer: after (re)starting the API server, /readyz
   * says yes a moment before custom resources are served (429 until then).
   */
  async ready(): Promise<void> {
    for (let waited = 0; ; waited += 100) {
      const status = (await this.raw("GET", `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/ippools?limit=1`).catch(() => ({ status: 0 }))).status;
      if (status === 200) return;
      if (waited > 30_000) throw new Error(`the whereabouts API still answers ${status} after 30 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async pool(name: string): Promise<IPPool | undefined> {
    return this.send<IPPool>("GET", `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/ippools/${encodeURIComponent(name)}`);
  }

  async pools(): Promise<IPPool[]> {
    return (await this.send<{ items: IPPool[] }>("GET", `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/ippools`))?.items ?? [];
  }

  async reservations(): Promise<Reservation[]> {
    const list = await this.send<{ items: Reservation[] }>("GET", `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/overlappingrangeipreservations`);
    return list?.items ?? [];
  }

  /** Deletes every IPPool and reservation, and upstream's Lease: a clean store for the next test. */
  async clear(): Promise<void> {
    for (const resource of ["ippools", "overlappingrangeipreservations"]) {
      await this.send("DELETE", `${WHEREABOUTS_API}/namespaces/${NAMESPACE}/${resource}`);
    }
    await this.send("DELETE", `/apis/coordination.k8s.io/v1/namespaces/${NAMESPACE}/leases/whereabouts`);
    // Custom resources have no finalizers here, but deletecollection is not a promise of an
    // empty list on the next read: wait for it.
    for (let waited = 0; (await this.pools()).length + (await this.reservations()).length > 0; waited += 50) {
      if (waited > 10_000) throw new Error("whereabouts objects still listed 10 s after deleting them");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * apiserver_request_total summed per "<group>/<resource> <verb>" (core group: ""), from the
   * API server's /metrics. Differences of two readings count the requests in between.
   */
  async requestCounts(): Promise<Map<string, number>> {
    const { status, text } = await this.raw("GET", "/metrics");
    if (status !== 200) throw new Error(`GET /metrics: ${status}`);
    const counts = new Map<string, number>();
    for (const line of text.split("\n")) {
      if (!line.startsWith("apiserver_request_total{")) continue;
      const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      const key = `${labels.group ?? ""}/${labels.resource ?? ""} ${labels.verb ?? ""}`;
      counts.set(key, (counts.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
    }
    return counts;
  }

  close(): void {
    this.agent.destroy();
  }
}

/** Requests between two readings of requestCounts(), per key, zero entries left out. */
export function requestsBetween(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of after) {
    const delta = value - (before.get(key) ?? 0);
    if (delta > 0) out.set(key, delta);
  }
  return out;
}

/**
 * The flat file upstream's binary insists on (`pkg/config/config.go`, `GetFlatIPAM`), naming this cluster: written once
 * per cluster, read by upstream's and our processes alike.
 */
export function writeFlatFile(cluster: Cluster, kubeconfig = cluster.kubeconfig): string {
  const path = join(cluster.dir, "whereabouts.conf");
  writeFileSync(path, JSON.stringify({ datastore: "kubernetes", kubernetes: { kubeconfig } }), { mode: 0o600 });
  return path;
}

/** What a racing node's ADD gets: a macvlan config whose IPAM is whereabouts on this cluster. */
export function racingNodeConfig(o: {
  name: string;
  cluster: Cluster;
  flatFile: string;
  datastoreDir: string;
  range: string;
  kubeconfig?: string;
}): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: o.name,
    type: "macvlan",
    ipam: {
      type: "whereabouts",
      datastore: "kubernetes",
      kubernetes: { kubeconfig: o.kubeconfig ?? o.cluster.kubeconfig },
      configuration_path: o.flatFile,
      datastore_dir: o.datastoreDir,
      range: o.range,
      log_level: "error",
    },
  };
}
