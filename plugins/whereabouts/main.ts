/**
 * The whereabouts IPAM plugin: one address per configured range, from a store every node shares
 * (Kubernetes) or from a store on this node only (`"datastore": "file"`). Each verb loads the
 * config, opens the session it names (the store and the node state that comes with it,
 * session.ts), replays what the node's journal still owes the store, and hands over to
 * operations.ts.
 */
import { parseNetConf } from "../../shared/cni/config.ts";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { PluginVerbs } from "../../shared/cni/skel.ts";
import type { Attachment, CmdArgs, Result } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import { type Logger, createLogger } from "../../shared/log.ts";
import { loadConfig } from "./config.ts";
import type { Origin } from "./node/journal.ts";
import type { Attached } from "./node/ledger.ts";
import { type Context, allocate, check, release, releaseOrphan, status } from "./operations.ts";
import { type Session, openSession } from "./session.ts";
import { isUnavailable } from "./store/interface.ts";

const NAME = "whereabouts";
/**
 * The share of an invocation's API time that replaying the journal may take before its own work
 * (counted from the replay's start: a process that waited long for a core still replays).
 */
const REPLAY_SHARE = 0.25;

export const whereabouts: PluginVerbs = {
  name: NAME,

  async add(args: CmdArgs): Promise<Result> {
    return withSession(args, async (ctx, session) => {
      const podRef = ctx.config.pod.podRef;
      if (podRef === undefined) {
        throw new CniError(ErrorCode.InvalidConfig, "no pod name: CNI_ARGS must carry K8S_POD_NAME, which whereabouts keys allocations by");
      }
      return session.attach(attachedOf(args), () => allocate(ctx, { containerId: args.containerId, ifName: args.ifName, podRef }));
    });
  },

  /**
   * Never fails once the config is valid. A release the store cannot take now is left for later:
   * the Kubernetes store's is journalled on this node and replayed; the file store's is logged,
   * and GC reclaims what is left.
   */
  async del(args: CmdArgs): Promise<void> {
    await withSession(args, async (ctx, session) => {
      try {
        await release(ctx, args.containerId, args.ifName);
        session.detach(attachedOf(args));
      } catch (err) {
        const journalled = session.deferRelease(args.conf.name, originOf(args));
        const what = `DEL of container ${args.containerId} ${args.ifName}`;
        if (journalled) ctx.log.error(`${what} journalled in ${journalled} for later: ${messageOf(err)}`);
        else ctx.log.error(`${what} could not release its addresses: ${messageOf(err)}`);
      }
    });
  },

  async check(args: CmdArgs): Promise<void> {
    await withSession(args, (ctx) => check(ctx, args.containerId, args.ifName, args.conf.prevResult));
  },

  async status(args: CmdArgs): Promise<void> {
    await withSession(args, (ctx) => status(ctx));
  },

  /**
   * Releases this network's allocations that no valid attachment accounts for, as far as this
   * node can tell (session.ts: the file store's pools are this node's own, the Kubernetes store
   * goes by the node's ledger). The journal was replayed before, as for every verb.
   */
  async gc(args: CmdArgs, valid: Attachment[]): Promise<void> {
    await withSession(args, (ctx, session) => session.collectGarbage(ctx, valid));
  },
};

function attachedOf(args: CmdArgs): Attached {
  return { network: args.conf.name, containerId: args.containerId, ifName: args.ifName };
}

function originOf(args: CmdArgs): Origin {
  return { config: args.conf.bytes, cniArgs: args.args, containerId: args.containerId, ifName: args.ifName };
}

/**
 * Loads the config, opens its session, replays what the node's journal owes (within a share of
 * the invocation's time), and runs `work` with this invocation's own reservation log, closed
 * when it is done (and left for a replay if anything is unsettled).
 */
async function withSession<T>(args: CmdArgs, work: (ctx: Context, session: Session) => Promise<T>): Promise<T> {
  const config = loadConfig(args.conf, args.args);
  const log = createLogger({ level: config.log.level, ...(config.log.file ? { file: config.log.file } : {}) }, NAME);
  for (const warning of config.warnings) log.error(warning);
  if (config.flatFile) log.debug(`merged flat file ${config.flatFile}`);
  const session = await openSession(config, log);
  try {
    await replayJournal(session, log, Date.now() + session.timeoutMs * REPLAY_SHARE);
    const reservations = session.journal.log(args.conf.name, originOf(args));
    const ctx: Context = { store: session.store, config, log, reservations, ...(session.batch ? { batch: session.batch } : {}) };
    if (session.deadline) ctx.deadline = session.deadline;
    try {
      return await work(ctx, session);
    } finally {
      reservations.close();
    }
  } finally {
    await session.close();
  }
}

/**
 * Replays what the node's journal owes, each entry with the configuration it was recorded with:
 * a DEL's release of an attachment, or the reservations a killed or failed invocation left
 * behind. Entries another invocation holds are passed over. Stops at `until`, and at the first
 * sign that the API is still away; an entry that fails otherwise stays, logged, and the next
 * ones are still tried.
 */
async function replayJournal(session: Session, log: Logger, until: number): Promise<void> {
  for (const held of session.journal.take()) {
    if (Date.now() > until) return;
    const { entry } = held;
    const { origin } = entry;
    try {
      const conf = parseNetConf(origin.config);
      const config = loadConfig(conf, origin.cniArgs);
      const store = await session.open(config);
      // A release that fails again is logged again, not lost with this entry.
      const reservations = session.journal.log(conf.name, origin);
      const ctx: Context = { store, config, log, reservations, ...(session.batch ? { batch: session.batch } : {}) };
      let outOfTime = false;
      try {
        if (entry.kind === "reservations") {
          for (const reservation of entry.reservations) {
            // A killed leader's log holds a whole batch: the rest waits for a later call (releasing twice is harmless).
            if (Date.now() > until) {
              outOfTime = true;
              break;
            }
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
      if (outOfTime) {
        held.leave();
        return;
      }
      held.done();
    } catch (err) {
      held.leave();
      log.error(`journal entry ${entry.path} of container ${origin.containerId} ${origin.ifName} not replayed yet: ${messageOf(err)}`);
      if (isUnavailable(err)) return;
    }
  }
}
