/**
 * What multus itself does in the pod's network namespace (everything else there is the
 * delegates'): check that a delegate's interface name is free, and apply a `default-route`
 * request to the routes of an interface (routes.ts decides what).
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { errnoOf } from "../../shared/errors.ts";
import { defaultPrefix, familyOf, parseIp } from "../../shared/ip.ts";
import { linkByName } from "../../shared/netlink/link.ts";
import { RT_TABLE_MAIN, routeAdd, routeDel, routeList } from "../../shared/netlink/route.ts";
import { isAlreadyGone } from "../../shared/netlink/socket.ts";
import { withNetns } from "../../shared/netns.ts";
import type { PodDelegate } from "./delegates.ts";
import type { RouteChange } from "./routes.ts";

/** upstream `validateIfName`: the delegate's interface must not exist yet in the pod. */
export function requireFreeName(netns: string, ifName: string, delegate: PodDelegate): void {
  const exists = withNetns(netns, (_ns, nl) => linkByName(nl, ifName) !== undefined);
  if (exists) {
    const type = delegate.conf.list.plugins[0]?.type ?? "";
    throw new CniError(
      ErrorCode.InvalidConfig,
      `cannot set ${JSON.stringify(type)} interface name to ${JSON.stringify(ifName)}: interface name ${ifName} already exists`,
    );
  }
}

/**
 * In the pod's namespace: every default route of the interface goes (upstream deletes them in
 * both families whichever is filtered), then one via each requested gateway is added.
 */
export function applyRouteChange(netns: string, ifName: string, change: RouteChange): void {
  withNetns(netns, (_ns, nl) => {
    const link = linkByName(nl, ifName);
    if (link === undefined) throw new CniError(ErrorCode.Kernel, `error deleting default gateway: no interface ${ifName} in ${netns}`);
    for (const route of routeList(nl, { table: RT_TABLE_MAIN, linkIndex: link.index })) {
      if (route.dst.length !== 0) continue;
      try {
        routeDel(nl, route);
      } catch (err) {
        if (!isAlreadyGone(err)) throw err;
      }
    }
    for (const text of change.gateways) {
      const gw = parseIp(text);
      try {
        routeAdd(nl, { dst: defaultPrefix(familyOf(gw)), gw, linkIndex: link.index });
      } catch (err) {
        if (errnoOf(err) !== "EEXIST") throw err;
      }
    }
  });
}
