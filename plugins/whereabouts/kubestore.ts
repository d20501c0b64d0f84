/**
 * The Kubernetes store: IPPools and OverlappingRangeIPReservations on the API server, shared
 * with upstream's binaries (reference §7, §8). Not in this build; the next issue replaces
 * openKubernetesStore with the real store behind the same WhereaboutsStore interface.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { WhereaboutsConfig } from "./config.ts";
import type { WhereaboutsStore } from "./store.ts";

export function openKubernetesStore(config: WhereaboutsConfig): WhereaboutsStore {
  const kubeconfig = config.store.kind === "kubernetes" && config.store.kubeconfig ? ` (kubeconfig ${config.store.kubeconfig})` : "";
  throw new CniError(
    ErrorCode.InvalidConfig,
    `the Kubernetes datastore${kubeconfig} is not available in this build of whereabouts`,
    'set "datastore": "file" to use the node-local file store',
  );
}
