/**
 * The `default-route` request of the networks annotation, applied after a delegate's ADD
 * (upstream multus v4.3.0 `CmdAdd` with `pkg/netutils`): the default routes of the delegate's
 * interface are deleted when its family is filtered or a gateway is requested, then a route via
 * each requested gateway is added (kernel.ts); libcni's cached result is rewritten to match
 * (here), so that a later CHECK agrees with the kernel. The result returned and the network-status keep what the
 * delegate reported, as upstream's do.
 */
import { readCacheEntry, writeCacheEntry } from "../../shared/cni/result-cache.ts";
import type { JsonObject, JsonValue } from "../../shared/cni/types.ts";
import { isJsonObject } from "../../shared/cni/json.ts";
import { familyOf, parseIp } from "../../shared/ip.ts";
import type { PodDelegate } from "./delegates.ts";

/** Upstream's spelling of the default destinations in the cached result. */
const DEFAULT_DST = { 4: "0.0.0.0/0", 6: "::0/0" } as const;

export interface RouteChange {
  deleteV4: boolean;
  deleteV6: boolean;
  gateways: string[];
}

/** What the delegate's `default-route` handling does; undefined when it does nothing. */
export function routeChangeOf(delegate: PodDelegate): RouteChange | undefined {
  const gateways = delegate.defaultRoute ?? [];
  const change = { deleteV4: delegate.filterV4Gateway || gateways.length > 0, deleteV6: delegate.filterV6Gateway || gateways.length > 0, gateways };
  return change.deleteV4 || change.deleteV6 ? change : undefined;
}

/** The same change in libcni's cached result of the attachment (a missing cache is left alone). */
export function rewriteCachedRoutes(cacheDir: string, networkName: string, containerId: string, ifName: string, change: RouteChange): void {
  const entry = readCacheEntry(cacheDir, networkName, containerId, ifName);
  if (entry?.result === undefined) return;
  entry.result = withRoutes(entry.result, change);
  writeCacheEntry(cacheDir, entry);
}

/** A result's JSON with the change applied to `routes` (upstream `deleteDefaultGWResult`, `addDefaultGWResult`). */
export function withRoutes(result: JsonObject, change: RouteChange): JsonObject {
  let routes: JsonValue[] = Array.isArray(result.routes) ? result.routes : [];
  const dropped = [...(change.deleteV4 ? [DEFAULT_DST[4]] : []), ...(change.deleteV6 ? [DEFAULT_DST[6], "::/0"] : [])];
  routes = routes.filter((route) => !(isJsonObject(route) && typeof route.dst === "string" && dropped.includes(route.dst)));
  for (const gw of change.gateways) routes.push({ dst: DEFAULT_DST[familyOf(parseIp(gw))], gw });
  const out: JsonObject = { ...result };
  if (routes.length > 0) out.routes = routes;
  else delete out.routes;
  return out;
}
