/**
 * What one invocation opens from its config: the store the config names, and the node state that
 * comes with that choice. Every store brings the node's journal (what the store is still owed,
 * replayed before every verb). The Kubernetes store, which every node shares, brings more: the
 * node's ADD queues (node/batch.ts), the ledger of what this node's ADDs allocated (what GC goes
 * by, node/ledger.ts), and one deadline for the invocation's API calls.
 *
 * The one module that tells the stores apart: the verbs (main.ts) work through `Session` alone.
 */
import { join } from "node:path";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { Attachment } from "../../shared/cni/types.ts";
import type { Logger } from "../../shared/log.ts";
import type { StoreChoice, WhereaboutsConfig } from "./config.ts";
import { FileNodeBatch, type NodeBatch } from "./node/batch.ts";
import { type Origin, ReleaseJournal } from "./node/journal.ts";
import { type Attached, AttachmentLedger } from "./node/ledger.ts";
import { flocks } from "./node/lock.ts";
import { type Context, collectGarbage, release } from "./operations.ts";
import { fileStoreRoot, openFileStore } from "./store/file.ts";
import type { WhereaboutsStore } from "./store/interface.ts";
import { openKubernetesStore } from "./store/kubernetes.ts";

export interface Session {
  readonly store: WhereaboutsStore;
  /** The node's journal of what the store is still owed: replayed before every verb, and each invocation's reservation log. */
  readonly journal: ReleaseJournal;
  /** Serves the node's concurrent ADDs of a pool together (the Kubernetes store). */
  readonly batch?: NodeBatch;
  /** When the invocation's API time is up (epoch ms), for a store with a deadline. */
  readonly deadline?: () => number;
  /** The invocation's time for the store's calls (`kubernetes.timeout_ms`); Infinity for a store without a deadline. */
  readonly timeoutMs: number;

  /** The store another configuration names (a journal entry's): the session's own connection when it names the same store. */
  open(config: WhereaboutsConfig): Promise<WhereaboutsStore>;
  /**
   * ADD: runs `allocate` with the attachment recorded where GC will look for it (the Kubernetes
   * store's ledger); a failed ADD, which undoes what it allocated, leaves no record.
   */
  attach<T>(attached: Attached, allocate: () => Promise<T>): Promise<T>;
  /** DEL: the attachment's addresses are released. */
  detach(attached: Attached): void;
  /**
   * DEL: the release failed and is left for later. The Kubernetes store journals it, for the
   * node's next invocation to replay, and gives the entry's path; the file store leaves it to GC
   * (undefined).
   */
  deferRelease(network: string, origin: Origin): string | undefined;
  /** GC: releases the network's allocations that no valid attachment accounts for, as far as this node can tell. */
  collectGarbage(ctx: Context, valid: readonly Attachment[]): Promise<void>;
  /** Closes every store the session opened. */
  close(): Promise<void>;
}

type FileChoice = Extract<StoreChoice, { kind: "file" }>;
type KubernetesChoice = Extract<StoreChoice, { kind: "kubernetes" }>;

/** Opens the store `config` names and the node state that comes with it. */
export function openSession(config: WhereaboutsConfig, log: Logger): Promise<Session> {
  switch (config.store.kind) {
    case "file":
      return openFileSession(config, config.store, log);
    case "kubernetes":
      return openKubernetesSession(config, config.store);
  }
}

async function openFileSession(config: WhereaboutsConfig, choice: FileChoice, log: Logger): Promise<Session> {
  if (config.nodeSliceSize) log.debug("node_slice_size is ignored by the file store: its single node owns the whole range");
  const stores = new Stores(Infinity);
  // The journal lives inside the network's folder of the store.
  const journal = new ReleaseJournal(join(fileStoreRoot(choice.dir, config.networkName), "journal"), flocks);
  return new FileSession(await stores.open(config), journal, stores);
}

async function openKubernetesSession(config: WhereaboutsConfig, choice: KubernetesChoice): Promise<Session> {
  if (config.nodeSliceSize) {
    // Upstream's nodes in slice mode allocate from per-node pools; allocating from the whole-range
    // pool beside them would hand out their addresses again.
    throw new CniError(
      ErrorCode.InvalidConfig,
      `"node_slice_size" (upstream's node slices) is not supported with the Kubernetes store`,
      "remove it to allocate from the whole range; do not mix with upstream nodes that use node slices",
    );
  }
  // One deadline for every API call of this invocation, journal replay included.
  const stores = new Stores(Date.now() + choice.timeoutMs);
  const journal = new ReleaseJournal(choice.journalDir, flocks);
  const opening = openKubernetesStore(choice, stores.deadline, flocks);
  stores.keep(config, opening);
  const store = await opening.catch(async (err: unknown) => {
    await stores.close();
    throw err;
  });
  // timeout_ms bounds the API's answers, not this node's own queue: an ADD that waited its turn
  // gets the whole of it when its turn comes.
  const batch = new FileNodeBatch(choice.lockDir, flocks, { onTurn: () => store.client.extendDeadline(Date.now() + choice.timeoutMs) });
  const ledger = new AttachmentLedger(choice.ledgerDir, flocks);
  return new KubernetesSession(store, journal, stores, choice.timeoutMs, batch, () => store.client.deadline, ledger);
}

/** The stores an invocation opens, one per store choice: a replayed entry for the same store shares the connection. */
class Stores {
  private readonly opened = new Map<string, Promise<WhereaboutsStore>>();

  constructor(readonly deadline: number) {}

  open(config: WhereaboutsConfig): Promise<WhereaboutsStore> {
    let store = this.opened.get(keyOf(config));
    if (!store) {
      store = openStore(config, this.deadline);
      this.keep(config, store);
    }
    return store;
  }

  /** Remembers a store being opened for `config`. */
  keep(config: WhereaboutsConfig, store: Promise<WhereaboutsStore>): void {
    this.opened.set(keyOf(config), store);
  }

  async close(): Promise<void> {
    for (const store of this.opened.values()) await (await store.catch(() => undefined))?.close();
  }
}

function keyOf(config: WhereaboutsConfig): string {
  return JSON.stringify([config.store, config.networkName]);
}

async function openStore(config: WhereaboutsConfig, deadline: number): Promise<WhereaboutsStore> {
  switch (config.store.kind) {
    case "file":
      return openFileStore({ dir: config.store.dir, networkName: config.networkName, locks: flocks });
    case "kubernetes":
      return openKubernetesStore(config.store, deadline, flocks);
  }
}

/** A node-local store: its pools are this node's own, so GC judges them by the runtime's list, and a failed release is GC's. */
class FileSession implements Session {
  readonly timeoutMs = Infinity;

  constructor(
    readonly store: WhereaboutsStore,
    readonly journal: ReleaseJournal,
    private readonly stores: Stores,
  ) {}

  open(config: WhereaboutsConfig): Promise<WhereaboutsStore> {
    return this.stores.open(config);
  }

  attach<T>(_attached: Attached, allocate: () => Promise<T>): Promise<T> {
    return allocate();
  }

  detach(): void {}

  deferRelease(): undefined {
    return undefined;
  }

  async collectGarbage(ctx: Context, valid: readonly Attachment[]): Promise<void> {
    await collectGarbage(ctx, valid);
  }

  close(): Promise<void> {
    return this.stores.close();
  }
}

/**
 * A store every node shares. Its pools are cluster-wide, and a runtime's list names only its own
 * node's attachments, so GC goes by the node's ledger of what its ADDs allocated: another node's
 * pods are never in it. A release the API cannot take now is journalled on this node.
 */
class KubernetesSession implements Session {
  constructor(
    readonly store: WhereaboutsStore,
    readonly journal: ReleaseJournal,
    private readonly stores: Stores,
    readonly timeoutMs: number,
    readonly batch: NodeBatch,
    readonly deadline: () => number,
    private readonly ledger: AttachmentLedger,
  ) {}

  open(config: WhereaboutsConfig): Promise<WhereaboutsStore> {
    return this.stores.open(config);
  }

  async attach<T>(attached: Attached, allocate: () => Promise<T>): Promise<T> {
    // In the ledger before allocating, so that GC finds an ADD that dies midway; out again when
    // the ADD fails, which undoes what it allocated. (A failed re-ADD keeps the address it had
    // and loses its ledger entry: its DEL still releases it, GC no longer can.)
    const done = this.ledger.record(attached);
    try {
      return await allocate();
    } catch (err) {
      this.ledger.forget(attached);
      throw err;
    } finally {
      done();
    }
  }

  detach(attached: Attached): void {
    this.ledger.forget(attached);
  }

  deferRelease(network: string, origin: Origin): string {
    return this.journal.record(network, origin);
  }

  async collectGarbage(ctx: Context, valid: readonly Attachment[]): Promise<void> {
    const garbage = (attached: Attached) => !valid.some((v) => v.containerID === attached.containerId && v.ifname === attached.ifName);
    await this.ledger.collect(ctx.config.name, garbage, async (attached) => {
      const released = await release(ctx, attached.containerId, attached.ifName);
      ctx.log.info(`GC: container ${attached.containerId} ${attached.ifName} is no valid attachment; released ${released.join(", ") || "nothing"}`);
    });
  }

  close(): Promise<void> {
    return this.stores.close();
  }
}
