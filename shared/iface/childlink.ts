/**
 * The verbs of an interface plugin whose interface is a child link of a master (macvlan, ipvlan):
 * create it inside the pod as CNI_IFNAME, address it from IPAM (or from prevResult when chained),
 * and undo everything if any step fails. A plugin supplies only what differs: its config, the link
 * to create, and what CHECK verifies about the link itself.
 */
import { CniError, ErrorCode } from "../cni/errors.ts";
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus } from "../cni/ipam.ts";
import type { PluginVerbs } from "../cni/skel.ts";
import type { CmdArgs, NetConf, Result } from "../cni/types.ts";
import { errnoOf, messageOf } from "../errors.ts";
import { logger } from "../log.ts";
import { type Link, type LinkSpec, linkAdd, linkByName, linkDel, linkSet } from "../netlink/link.ts";
import { type Netlink, NetlinkError, isAlreadyGone, withNetlink } from "../netlink/socket.ts";
import { type Netns, isNetnsGone, sysctlSet, withNetns } from "../netns.ts";
import type { ChildLinkConfig } from "./childlink-config.ts";
import { checkInterface, configureInterface, defaultRouteLink, kernel } from "./configure.ts";
import { type UndoLog, withUndo } from "./undo.ts";

export interface ChildLinkKind<C extends ChildLinkConfig> {
  name: string;
  loadConfig(conf: NetConf, cniArgs: string): C;
  /** The link to create as CNI_IFNAME on `master` (netnsFd is filled in by the mechanism). */
  linkSpec(config: C, master: Link, ifName: string): LinkSpec;
  /** CHECK: the kernel's view of the link matches the config; throw a CniError if not. */
  checkLink(config: C, link: Link, ifName: string): void;
  /**
   * Chained use (ipvlan): when `master` is not configured, the master named by prevResult.
   * Returns undefined when the config alone decides.
   */
  chainedMaster?(conf: NetConf): string | undefined;
  /** Chained use (ipvlan): with no IPAM, apply prevResult's addresses instead. */
  addressesFromPrevResult?: boolean;
}

export function childLinkPlugin<C extends ChildLinkConfig>(kind: ChildLinkKind<C>): PluginVerbs {
  const log = logger(kind.name);

  function findMaster(config: C, conf: NetConf, nl: Netlink): Link {
    const name = config.master ?? kind.chainedMaster?.(conf);
    if (!name) return defaultRouteLink(nl);
    const master = linkByName(nl, name);
    if (!master) throw new CniError(ErrorCode.InvalidConfig, `master "${name}" not found`);
    return master;
  }

  function createLink(config: C, args: CmdArgs, pod: Netns, podNl: Netlink, masterNl: Netlink): Link {
    const master = findMaster(config, args.conf, masterNl);
    if (config.mtu > master.mtu) {
      throw new CniError(ErrorCode.InvalidConfig, `mtu ${config.mtu} is above the MTU of master "${master.name}" (${master.mtu})`);
    }
    const spec = kind.linkSpec(config, master, args.ifName);
    // Born in the pod: there is no moment where the link sits on the node under the pod's name.
    if (!config.linkInContainer) spec.netnsFd = pod.fd;
    try {
      linkAdd(masterNl, spec);
    } catch (err) {
      if (err instanceof NetlinkError && errnoOf(err) === "EEXIST") {
        throw new CniError(ErrorCode.Kernel, `interface "${args.ifName}" already exists in the pod`);
      }
      const reason = messageOf(err);
      throw new CniError(ErrorCode.Kernel, `failed to create ${kind.name} "${args.ifName}" on master "${master.name}": ${reason}`);
    }
    const link = linkByName(podNl, args.ifName);
    if (!link) throw new CniError(ErrorCode.Kernel, `${kind.name} "${args.ifName}" vanished right after creation`);
    return link;
  }

  /** The addresses and routes for the new link: from IPAM (its release left in `undo`), or passed down the chain. */
  function addressing(config: C, args: CmdArgs, undo: UndoLog): Result | undefined {
    if (config.hasIpam) {
      const ipam = ipamAdd(args);
      undo.push(() => ipamDel(args));
      if (!ipam.ips || ipam.ips.length === 0) {
        throw new CniError(ErrorCode.Delegate, `IPAM plugin "${args.conf.ipam?.type}" returned no IP addresses`);
      }
      return ipam;
    }
    const prev = args.conf.prevResult;
    if (kind.addressesFromPrevResult && prev?.ips && prev.ips.length > 0) return prev;
    return undefined;
  }

  function configure(config: C, args: CmdArgs, pod: Netns, podNl: Netlink, link: Link, undo: UndoLog): Result {
    const result: Result = {
      cniVersion: args.conf.cniVersion,
      interfaces: [{ name: args.ifName, mac: link.mac, sandbox: args.netns }],
    };
    const addresses = addressing(config, args, undo);
    if (!addresses) {
      kernel(`failed to set "${args.ifName}" up`, () => linkSet(podNl, link.index, { up: true }));
    } else {
      result.ips = (addresses.ips ?? []).map((ip) => ({ ...ip, interface: 0 }));
      if (addresses.routes) result.routes = addresses.routes;
      pod.run(() => announceOnUp(args.ifName));
      configureInterface(pod, podNl, args.ifName, result);
    }
    if (args.conf.dns) result.dns = args.conf.dns;
    return result;
  }

  /** With these the kernel sends gratuitous ARP / unsolicited NA itself when the link comes up. */
  function announceOnUp(ifName: string): void {
    for (const name of [`net/ipv4/conf/${ifName}/arp_notify`, `net/ipv6/conf/${ifName}/ndisc_notify`]) {
      try {
        sysctlSet(name, "1");
      } catch (err) {
        log.debug(`cannot set ${name}: ${messageOf(err)}`);
      }
    }
  }

  return {
    name: kind.name,

    add(args) {
      const config = kind.loadConfig(args.conf, args.args);
      return withNetns(args.netns, (pod, podNl) => {
        const link = config.linkInContainer
          ? createLink(config, args, pod, podNl, podNl)
          : withNetlink((hostNl) => createLink(config, args, pod, podNl, hostNl));
        // Leave nothing behind: the runtime need not call DEL for an ADD that failed.
        return withUndo(log, (undo) => {
          undo.push(() => removeLink(podNl, link.index, args.ifName));
          return configure(config, args, pod, podNl, link, undo);
        });
      });
    },

    del(args) {
      const config = kind.loadConfig(args.conf, args.args);
      // The link first, so that a failing IPAM cannot keep the pod's interface alive; and IPAM
      // whatever happened to the link, so that no failure there can keep the address. No master
      // lookup: DEL must work when the node's routes or the master are gone.
      let linkFailure: unknown;
      if (args.netns) {
        try {
          withNetns(args.netns, (_pod, podNl) => {
            const link = linkByName(podNl, args.ifName);
            if (link) removeLink(podNl, link.index, args.ifName);
          });
        } catch (err) {
          if (!isNetnsGone(err)) linkFailure = err;
        }
      }
      if (config.hasIpam) ipamDel(args);
      if (linkFailure) throw linkFailure;
    },

    check(args) {
      const config = kind.loadConfig(args.conf, args.args);
      const prev = args.conf.prevResult;
      if (!prev) throw new CniError(ErrorCode.InvalidConfig, "required prevResult missing");
      if (config.hasIpam) ipamCheck(args);
      const mine = (prev.interfaces ?? []).find((i) => i.name === args.ifName && i.sandbox === args.netns);
      if (!mine) {
        throw new CniError(ErrorCode.InvalidConfig, `prevResult has no interface "${args.ifName}" in sandbox "${args.netns}"`);
      }
      withNetns(args.netns, (_pod, podNl) => {
        const link = linkByName(podNl, args.ifName);
        if (!link) throw new CniError(ErrorCode.Internal, `interface "${args.ifName}" not found in the pod`);
        if (link.info?.kind !== kind.name) {
          throw new CniError(ErrorCode.Internal, `interface "${args.ifName}" is a ${link.info?.kind ?? "plain"} link, not ${kind.name}`);
        }
        kind.checkLink(config, link, args.ifName);
        // The parent can be named only when the config names it: a master taken from the default
        // route or from a chain at ADD time may legitimately be another link now.
        const masterName = config.master;
        if (masterName) {
          const master = config.linkInContainer ? linkByName(podNl, masterName) : withNetlink((hostNl) => linkByName(hostNl, masterName));
          if (!master) throw new CniError(ErrorCode.Internal, `master "${masterName}" not found`);
          if (link.parentIndex !== master.index) {
            throw new CniError(ErrorCode.Internal, `interface "${args.ifName}" is not a ${kind.name} of master "${master.name}"`);
          }
        }
        if (mine.mac && mine.mac.toLowerCase() !== link.mac) {
          throw new CniError(ErrorCode.Internal, `interface "${args.ifName}" has MAC ${link.mac}, expected ${mine.mac}`);
        }
        checkInterface(podNl, link, args.ifName, prev);
      });
    },

    status(args) {
      const config = kind.loadConfig(args.conf, args.args);
      // Only a configured master on the node can be checked: STATUS has no pod to look into.
      const masterName = config.master;
      if (masterName && !config.linkInContainer && !withNetlink((hostNl) => linkByName(hostNl, masterName))) {
        throw new CniError(ErrorCode.Unavailable, `${kind.name} cannot add interfaces: master "${masterName}" not found`);
      }
      if (config.hasIpam) ipamStatus(args);
    },

    gc(args) {
      // Upstream drops GC here; the IPAM plugin owns the leases that GC exists to reclaim.
      if (args.conf.ipam?.type) ipamGc(args);
    },
  };
}

function removeLink(nl: Netlink, index: number, ifName: string): void {
  try {
    linkDel(nl, index);
  } catch (err) {
    if (!isAlreadyGone(err)) {
      throw new CniError(ErrorCode.Kernel, `failed to delete "${ifName}": ${messageOf(err)}`);
    }
  }
}
