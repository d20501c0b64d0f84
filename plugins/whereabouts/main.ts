/**
 * The whereabouts IPAM plugin: one address per configured range, from a store every node shares
 * (Kubernetes) or from a store on this node only (`"datastore": "file"`). The verbs load the
 * config, open the store it names, replay what the node's journal still owes the store, and hand
 * over to operations.ts.
 */
import { join } from "node:path";
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { Attachment, CmdArgs, Result } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import { type Logger, createLogger } from "../../shared/log.ts";
import { type WhereaboutsConfig, loadConfig } from "./config.ts";
import { FileNodeBatch, type NodeBatch } from "./node/batch.ts";
import { fileStoreRoot, openFileStore } from "./store/file.ts";
import { type Origin, ReleaseJournal } from "./node/journal.ts";
import { type Attached, AttachmentLedger } from "./node/ledger.ts";
import { KubernetesStore, isUnavailable, openKubernetesStore } from "./store/kubernetes.ts";
import { flocks } from "./node/lock.ts";
import { type Context, allocate, check, collectGarbage, release, releaseOrphan, status } from "./operations.ts";
import type { WhereaboutsStore } from "./store/interface.ts";

const NAME = "whereabouts";
/**
 * The share of an invocation's API time that replaying the journal may take before its own work
 * (counted from the replay's start: a process that waited long for a core still replays).
 */
const REPLAY_SHARE = 0.25;

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
      const ledger = new AttachmentLedger(store.ledgerDir, flocks);
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
    await withContext(args, async (ctx, journal) => {
      const store = ctx.config.store;
      try {
        await release(ctx, args.containerId, args.ifName);
        if (store.kind === "kubernetes") {
          new AttachmentLedger(store.ledgerDir, flocks).forget({ network: args.conf.name, containerId: args.containerId, ifName: args.ifName });
        }
      } catch (err) {
        if (store.kind !== "kubernetes") {
          ctx.log.error(`DEL of container ${args.containerId} ${args.ifName} could not release its addresses: ${messageOf(err)}`);
          return;
        }
        const path = journal.record(args.conf.name, originOf(args));
        ctx.log.error(`DEL of container ${args.containerId} ${args.ifName} journalled in ${path} for later: ${messageOf(err)}`);
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
   * ADDs allocated: another node's pods are never in it. The journal was replayed before (as for
   * every verb).
   */
  async gc(args: CmdArgs, valid: Attachment[]): Promise<void> {
    await withContext(args, async (ctx) => {
      const store = ctx.config.store;
      if (store.kind !== "kubernetes") {
        await collectGarbage(ctx, valid);
        return;
      }
      const garbage = (attached: Attached) => !valid.some((v) => v.containerID === attached.containerId && v.ifname === attached.ifName);
      await new AttachmentLedger(store.ledgerDir, flocks).collect(args.conf.name, garbage, async (attached) => {
        const released = await release(ctx, attached.containerId, attached.ifName);
        ctx.log.info(`GC: container ${attached.containerId} ${attached.ifName} is no valid attachment; released ${released.join(", ") || "nothing"}`);
      });
    });
  },
};

function originOf(args: CmdArgs): Origin {
  return { config: args.conf.bytes, cniArgs: args.args, containerId: args.containerId, ifName: args.ifName };
}

/**
 * Loads the config, opens its store and the node's journal, replays what the journal owes
 * (within a share of the invocation's time), and runs `work` with this invocation's own
 * reservation log, closed when it is done (and left for a replay if anything is unsettled).
 */
async function withContext<T>(args: CmdArgs, work: (ctx: Context, journal: ReleaseJournal) => Promise<T>): Promise<T> {
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
  const started = Date.now();
  const timeoutMs = config.store.kind === "kubernetes" ? config.store.timeoutMs : Infinity;
  const stores = new Stores(started + timeoutMs);
  const journal = new ReleaseJournal(journalDirOf(config), flocks);
  try {
    const store = await stores.open(config);
    const batch = nodeBatchOf(config, store);
    await replayJournal(journal, stores, batch, log, Date.now() + timeoutMs * REPLAY_SHARE);
    const reservations = journal.log(args.conf.name, originOf(args));
    const ctx: Context = { store, config, log, reservations, ...(batch ? { batch } : {}) };
    if (store instanceof KubernetesStore) ctx.deadline = () => store.client.deadline;
    try {
      return await work(ctx, journal);
    } finally {
      reservations.close();
    }
  } finally {
    await stores.close();
  }
}

/** Where the node's journal lives: beside the Kubernetes store's node state, or inside the file store's network folder. */
function journalDirOf(config: WhereaboutsConfig): string {
  return config.store.kind === "kubernetes" ? config.store.journalDir : join(fileStoreRoot(config.store.dir, config.networkName), "journal");
}

/**
 * The Kubernetes store's node batch: timeout_ms bounds the API's answers, not this node's own
 * queue, so an ADD that waited its turn gets the whole of it when its turn comes.
 */
function nodeBatchOf(config: WhereaboutsConfig, store: WhereaboutsStore): NodeBatch | undefined {
  if (config.store.kind !== "kubernetes" || !(store instanceof KubernetesStore)) return undefined;
  const { lockDir, timeoutMs } = config.store;
  return new FileNodeBatch(lockDir, flocks, { onTurn: () => store.client.extendDeadline(Date.now() + timeoutMs) });
}

/** The stores an invocation opens, one per store choice: a replayed entry for the same store shares the connection. */
class Stores {
  private readonly opened = new Map<string, Promise<WhereaboutsStore>>();

  constructor(private readonly deadline: number) {}

  open(config: WhereaboutsConfig): Promise<WhereaboutsStore> {
    const key = JSON.stringify([config.store, config.networkName]);
    let store = this.opened.get(key);
    if (!store) {
      store = openStore(config, this.deadline);
      this.opened.set(key, store);
    }
    return store;
  }

  async close(): Promise<void> {
    for (const store of this.opened.values()) await (await store.catch(() => undefined))?.close();
  }
}

async function openStore(config: WhereaboutsConfig, deadline: number): Promise<WhereaboutsStore> {
  switch (config.store.kind) {
    case "file":
      return openFileStore({ dir: config.store.dir, networkName: config.networkName, locks: flocks });
    case "kubernetes":
      return openKubernetesStore(config.store, deadline, flocks);
  }
}

/**
 * Replays what the node's journal owes, each entry with the configuration it was recorded with:
 * a DEL's release of an attachment, or the reservations a killed or failed invocation left
 * behind. Entries another invocation holds are passed over. Stops at `until`, and at the first
 * sign that the API is still away; an entry that fails otherwise stays, logged, and the next
 * ones are still tried.
 */
async function replayJournal(journal: ReleaseJournal, stores: Stores, batch: NodeBatch | undefined, log: Logger, until: number): Promise<void> {
  for (const held of journal.take()) {
    if (Date.now() > until) return;
    const { entry } = held;
    const { origin } = entry;
    try {
      const conf = parseNetConf(origin.config);
      const config = loadConfig(conf, origin.cniArgs);
      const store = await stores.open(config);
      // A release that fails again is logged again, not lost with this entry.
      const reservations = journal.log(conf.name, origin);
      const ctx: Context = { store, config, log, reservations, ...(batch ? { batch } : {}) };
      try {
        if (entry.kind === "reservations") {
          for (const reservation of entry.reservations) {
            const released = await releaseOrphan(ctx, reservation);
            log.info(`replayed the release of the reservation of ${reservation.address} in ${reservation.range}: ${released ? "released" : "kept, in use"}`);
          }
        } else {
          const released = await release(ctx, origin.containerId, origin.ifName);
          log.info(`replayed the journalled DEL of container ${origin.containerId} ${origin.ifName}: released ${released.join(", ") || "nothing"}`);
        }
      } finally {
        reservations.close();
      }
      held.done();
    } catch (err) {
      held.leave();
      log.error(`journal entry ${entry.path} of container ${origin.containerId} ${origin.ifName} not replayed yet: ${messageOf(err)}`);
      if (isUnavailable(err)) return;
    }
  }
}

