/**
 * The whereabouts IPAM plugin: one address per configured range, from a store every node shares
 * (Kubernetes) or from a store on this node only (`"datastore": "file"`). The verbs load the
 * config, open the store it names, and hand over to operations.ts.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { Attachment, CmdArgs, Result } from "../../shared/cni/types.ts";
import { type Logger, createLogger } from "../../shared/log.ts";
import { type WhereaboutsConfig, loadConfig } from "./config.ts";
import { openFileStore } from "./filestore.ts";
import { ReleaseJournal } from "./journal.ts";
import { isUnavailable, openKubernetesStore } from "./kubestore.ts";
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

  /**
   * Never fails once the config is valid. A release the Kubernetes API cannot take now is
   * journalled on this node and replayed later; the file store's failures are logged, and GC
   * reclaims what is left.
   */
  async del(args: CmdArgs): Promise<void> {
    await withContext(args, async (ctx) => {
      try {
        await release(ctx, args.containerId, args.ifName);
      } catch (err) {
        const store = ctx.config.store;
        if (store.kind !== "kubernetes") {
          ctx.log.error(`DEL of container ${args.containerId} ${args.ifName} could not release its addresses: ${errorText(err)}`);
          return;
        }
        const path = new ReleaseJournal(store.journalDir).record(args.conf.name, {
          config: args.conf.bytes,
          cniArgs: args.args,
          containerId: args.containerId,
          ifName: args.ifName,
          recordedAt: new Date().toISOString(),
        });
        ctx.log.error(`DEL of container ${args.containerId} ${args.ifName} journalled in ${path} for later: ${errorText(err)}`);
      }
    });
  },

  async check(args: CmdArgs): Promise<void> {
    await withContext(args, (ctx) => check(ctx, args.containerId, args.ifName, args.conf.prevResult));
  },

  async status(args: CmdArgs): Promise<void> {
    await withContext(args, (ctx) => status(ctx));
  },

  /**
   * The file store releases this network's entries no valid attachment accounts for. The
   * Kubernetes store releases nothing: its pools are cluster-wide, and a runtime's list names only
   * its own node's attachments (cnitool's none at all), so every other node's pods would lose
   * their addresses. There, GC only replays this node's journal (done for every verb).
   */
  async gc(args: CmdArgs, valid: Attachment[]): Promise<void> {
    await withContext(args, async (ctx) => {
      if (ctx.config.store.kind === "kubernetes") {
        ctx.log.info("GC releases nothing on the cluster-wide Kubernetes store; journalled releases were replayed");
        return;
      }
      await collectGarbage(ctx, valid);
    });
  },
};

async function withContext<T>(args: CmdArgs, work: (ctx: Context) => Promise<T>): Promise<T> {
  const config = loadConfig(args.conf, args.args);
  const log = createLogger({ level: config.log.level, ...(config.log.file ? { file: config.log.file } : {}) }, NAME);
  for (const warning of config.warnings) log.error(warning);
  if (config.flatFile) log.debug(`merged flat file ${config.flatFile}`);
  if (config.nodeSliceSize && config.store.kind === "file") {
    log.debug("node_slice_size is ignored by the file store: its single node owns the whole range");
  }
  if (config.nodeSliceSize && config.store.kind === "kubernetes") {
    // Upstream's nodes in slice mode allocate from per-node pools; allocating from the whole-range
    // pool beside them would hand out their addresses again.
    throw new CniError(
      ErrorCode.InvalidConfig,
      `"node_slice_size" (upstream's node slices) is not supported with the Kubernetes store`,
      "remove it to allocate from the whole range; do not mix with upstream nodes that use node slices",
    );
  }
  // One deadline for every API call of this invocation, journal replay included.
  const deadline = config.store.kind === "kubernetes" ? Date.now() + config.store.timeoutMs : Infinity;
  if (config.store.kind === "kubernetes") await replayJournal(new ReleaseJournal(config.store.journalDir), log, deadline);
  const store = await openStore(config, deadline);
  try {
    return await work({ store, config, log });
  } finally {
    await store.close();
  }
}

async function openStore(config: WhereaboutsConfig, deadline: number): Promise<WhereaboutsStore> {
  switch (config.store.kind) {
    case "file":
      return openFileStore({ dir: config.store.dir, networkName: config.networkName, lock: flockFile });
    case "kubernetes": {
      const { lockDir } = config.store;
      mkdirSync(lockDir, { recursive: true, mode: 0o700 });
      return openKubernetesStore(config.store, deadline, (poolName) => flockFile(join(lockDir, `${poolName}.lock`)));
    }
  }
}

/**
 * Replays releases an earlier DEL on this node had to journal, each with the configuration it
 * was recorded with. Stops at the first sign that the API is still away (the invocation's
 * deadline bounds the whole replay); an entry that fails otherwise stays, logged, and the next
 * ones are still tried.
 */
async function replayJournal(journal: ReleaseJournal, log: Logger, deadline: number): Promise<void> {
  for (const entry of journal.pending()) {
    const { release: pending } = entry;
    try {
      const config = loadConfig(parseNetConf(pending.config), pending.cniArgs);
      const store = await openStore(config, deadline);
      try {
        const released = await release({ store, config, log }, pending.containerId, pending.ifName);
        log.info(`replayed the journalled DEL of container ${pending.containerId} ${pending.ifName}: released ${released.join(", ") || "nothing"}`);
      } finally {
        await store.close();
      }
      journal.forget(entry);
    } catch (err) {
      log.error(`journalled DEL of container ${pending.containerId} ${pending.ifName} not replayed yet: ${errorText(err)}`);
      if (isUnavailable(err)) return;
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
