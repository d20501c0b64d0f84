/**
 * The whereabouts IPAM plugin: one address per configured range, from a store every node shares
 * (Kubernetes) or from a store on this node only (`"datastore": "file"`). The verbs load the
 * config, open the store it names, and hand over to operations.ts.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { Attachment, CmdArgs, Result } from "../../shared/cni/types.ts";
import { createLogger } from "../../shared/log.ts";
import { type WhereaboutsConfig, loadConfig } from "./config.ts";
import { openFileStore } from "./filestore.ts";
import { openKubernetesStore } from "./kubestore.ts";
import { flockFile } from "./lock.ts";
import { type Context, allocate, check, collectGarbage, release, status } from "./operations.ts";
import type { WhereaboutsStore } from "./store.ts";

const NAME = "whereabouts";

export const whereabouts: PluginVerbs = {
  name: NAME,

  async add(args: CmdArgs): Promise<Result> {
    return withContext(args, (ctx) => {
      const podRef = ctx.config.pod.podRef;
      if (podRef === undefined) {
        throw new CniError(ErrorCode.InvalidConfig, "no pod name: CNI_ARGS must carry K8S_POD_NAME, which whereabouts keys allocations by");
      }
      return allocate(ctx, { containerId: args.containerId, ifName: args.ifName, podRef });
    });
  },

  /** Never fails once the config is valid: a lease the store could not release is logged, and GC reclaims it later. */
  async del(args: CmdArgs): Promise<void> {
    await withContext(args, async (ctx) => {
      try {
        await release(ctx, args.containerId, args.ifName);
      } catch (err) {
        ctx.log.error(`DEL of container ${args.containerId} ${args.ifName} could not release its addresses: ${errorText(err)}`);
      }
    });
  },

  async check(args: CmdArgs): Promise<void> {
    await withContext(args, (ctx) => check(ctx, args.containerId, args.ifName, args.conf.prevResult));
  },

  async status(args: CmdArgs): Promise<void> {
    await withContext(args, (ctx) => status(ctx));
  },

  async gc(args: CmdArgs, valid: Attachment[]): Promise<void> {
    await withContext(args, (ctx) => collectGarbage(ctx, valid));
  },
};

async function withContext<T>(args: CmdArgs, work: (ctx: Context) => Promise<T>): Promise<T> {
  const config = loadConfig(args.conf, args.args);
  const log = createLogger({ level: config.log.level, ...(config.log.file ? { file: config.log.file } : {}) }, NAME);
  for (const warning of config.warnings) log.error(warning);
  if (config.flatFile) log.debug(`merged flat file ${config.flatFile}`);
  const store = openStore(config);
  if (config.nodeSliceSize && config.store.kind === "file") {
    log.debug("node_slice_size is ignored by the file store: its single node owns the whole range");
  }
  try {
    return await work({ store, config, log });
  } finally {
    await store.close();
  }
}

/** The store the config names; the file store needs no connection, so this cannot block. */
function openStore(config: WhereaboutsConfig): WhereaboutsStore {
  switch (config.store.kind) {
    case "file":
      return openFileStore({ dir: config.store.dir, networkName: config.networkName, lock: flockFile });
    case "kubernetes":
      return openKubernetesStore(config);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
