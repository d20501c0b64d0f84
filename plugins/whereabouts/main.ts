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
import { FileNodeBatch } from "./batch.ts";
import { openFileStore } from "./filestore.ts";
import { type PendingRelease, ReleaseJournal } from "./journal.ts";
import { type Attached, AttachmentLedger } from "./ledger.ts";
import { KubernetesStore, isUnavailable, openKubernetesStore } from "./kubestore.ts";
import { flockFile, lockedFd } from "./lock.ts";
import { type Context, type UnreleasedReservation, allocate, check, collectGarbage, release, releaseOrphan, status } from "./operations.ts";
import type { WhereaboutsStore } from "./store.ts";

const NAME = "whereabouts";

export const whereabouts: PluginVerbs = {
  name: NAME,

  async add(args: CmdArgs): Promise<Result> {
    return withContext(args, async (ctx) => {
      const podRef = ctx.config.pod.podRef;
      if (podRef === undefined) {
        throw new CniError(ErrorCode.InvalidConfig, "no pod name: CNI_ARGS must carry K8S_POD_NAME, which whereabouts keys allocations by");
      }
      const store = ctx.config.store;
      if (store.kind !== "kubernetes") return allocate(ctx, { containerId: args.containerId, ifName: args.ifName, podRef });
      // In the ledger before allocating, so that GC finds an ADD that dies midway; out again when
      // the ADD fails, which undoes what it allocated. (A failed re-ADD keeps the address it had
      // and loses its ledger entry: its DEL still releases it, GC no longer can.)
      const ledger = new AttachmentLedger(store.ledgerDir, lockedFd);
      const attached = { network: args.conf.name, containerId: args.containerId, ifName: args.ifName };
      const done = ledger.record(attached);
      try {
        return await allocate(ctx, { containerId: args.containerId, ifName: args.ifName, podRef });
      } catch (err) {
        ledger.forget(attached);
        throw err;
      } finally {
        done();
      }
    });
  },

  /**
   * Never fails once the config is valid. A release the Kubernetes API cannot take now is
   * journalled on this node and replayed later; the file store's failures are logged, and GC
   * reclaims what is left.
   */
  async del(args: CmdArgs): Promise<void> {
    await withContext(args, async (ctx) => {
      const store = ctx.config.store;
      try {
        await release(ctx, args.containerId, args.ifName);
        if (store.kind === "kubernetes") {
          new AttachmentLedger(store.ledgerDir, lockedFd).forget({ network: args.conf.name, containerId: args.containerId, ifName: args.ifName });
        }
      } catch (err) {
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
   * Releases this network's allocations that no valid attachment accounts for. The file store's
   * pools are this node's own. The Kubernetes store's are cluster-wide, and a runtime's list
   * names only its own node's attachments, so there GC goes by the node's ledger of what its
   * ADDs allocated: another node's pods are never in it. Journalled releases were replayed
   * before (as for every verb).
   */
  async gc(args: CmdArgs, valid: Attachment[]): Promise<void> {
    await withContext(args, async (ctx) => {
      const store = ctx.config.store;
      if (store.kind !== "kubernetes") {
        await collectGarbage(ctx, valid);
        return;
      }
      const garbage = (attached: Attached) => !valid.some((v) => v.containerID === attached.containerId && v.ifname === attached.ifName);
      await new AttachmentLedger(store.ledgerDir, lockedFd).collect(args.conf.name, garbage, async (attached) => {
        const released = await release(ctx, attached.containerId, attached.ifName);
        ctx.log.info(`GC: container ${attached.containerId} ${attached.ifName} is no valid attachment; released ${released.join(", ") || "nothing"}`);
      });
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
  const journal = config.store.kind === "kubernetes" ? new ReleaseJournal(config.store.journalDir) : undefined;
  if (journal) await replayJournal(journal, log, deadline);
  const store = await openStore(config, deadline);
  const ctx: Context = { store, config, log };
  if (journal && config.store.kind === "kubernetes" && store instanceof KubernetesStore) {
    const { lockDir, timeoutMs } = config.store;
    // timeout_ms bounds the API's answers, not this node's own queue: an ADD that waited its
    // turn gets the whole of it when it leads.
    ctx.batch = new FileNodeBatch(lockDir, flockFile, { onLead: () => store.client.extendDeadline(Date.now() + timeoutMs) });
    ctx.unreleased = journalling(journal, args.conf.name, { config: args.conf.bytes, cniArgs: args.args, containerId: args.containerId, ifName: args.ifName }, log);
  }
  try {
    return await work(ctx);
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
      const conf = parseNetConf(pending.config);
      const config = loadConfig(conf, pending.cniArgs);
      const store = await openStore(config, deadline);
      // A release that fails again is journalled again, not lost with this entry.
      const ctx: Context = { store, config, log, unreleased: journalling(journal, conf.name, pending, log) };
      try {
        if (pending.reservation) {
          const released = await releaseOrphan(ctx, pending.reservation);
          log.info(`replayed the journalled release of the reservation of ${pending.reservation.address} in ${pending.reservation.range}: ${released ? "released" : "kept, in use"}`);
        } else {
          const released = await release(ctx, pending.containerId, pending.ifName);
          log.info(`replayed the journalled DEL of container ${pending.containerId} ${pending.ifName}: released ${released.join(", ") || "nothing"}`);
        }
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

/** Records a reservation that could not be released now in the node's journal, for a later call to release. */
function journalling(
  journal: ReleaseJournal,
  network: string,
  origin: Pick<PendingRelease, "config" | "cniArgs" | "containerId" | "ifName">,
  log: Logger,
): (reservation: UnreleasedReservation) => void {
  return (reservation) => {
    const { config, cniArgs, containerId, ifName } = origin;
    const path = journal.record(network, { config, cniArgs, containerId, ifName, recordedAt: new Date().toISOString(), reservation });
    log.error(`reservation of ${reservation.address} in ${reservation.range} journalled in ${path} for later`);
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
