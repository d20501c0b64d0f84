/**
 * Side by side with upstream macvlan v1.9.1: the same inputs through both binaries, on identical
 * node/pod topologies, must give the same result JSON (MAC, sandbox path and key order aside) and
 * the same kernel state in the pod.
 *
 * Differences we chose (docs/macvlan.md#differences-from-upstream-macvlan-v191) are exercised
 * elsewhere, not here: error objects carry cniVersion, failures clean up after themselves, GC
 * reaches IPAM.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { BIN, UPSTREAM_BIN, cleanup, cni, ip, links, netns, node, nsPath, sweepStale, type IpLink, type IpRoute } from "./harness.ts";

const OURS = join(BIN, "macvlan");
const UPSTREAM = join(UPSTREAM_BIN, "macvlan");

beforeAll(() => {
  sweepStale();
  expect(existsSync(UPSTREAM), `${UPSTREAM} missing: run scripts/build-upstream.sh`).toBe(true);
  expect(existsSync(OURS), `${OURS} missing: run npm run build`).toBe(true);
});
afterEach(cleanup);
afterAll(cleanup);

const ipam = {
  type: "static",
  addresses: [{ address: "10.20.0.5/24", gateway: "10.20.0.1" }, { address: "fd20::5/64" }],
  routes: [{ dst: "172.31.0.0/16" }, { dst: "10.99.0.0/16", gw: "10.20.0.254" }],
  dns: { nameservers: ["10.20.0.53"] },
};

const CASES: { title: string; config: Record<string, unknown>; args?: string }[] = [
  { title: "defaults, 1.0.0", config: { cniVersion: "1.0.0", ipam } },
  { title: "1.1.0", config: { cniVersion: "1.1.0", ipam } },
  { title: "0.4.0", config: { cniVersion: "0.4.0", ipam } },
  { title: "0.3.1 with dns", config: { cniVersion: "0.3.1", ipam, dns: { nameservers: ["1.1.1.1"], search: ["svc"] } } },
  { title: "private mode, mtu", config: { cniVersion: "1.0.0", ipam, mode: "private", mtu: 1400 } },
  { title: "vepa", config: { cniVersion: "1.0.0", ipam, mode: "vepa" } },
  { title: "passthru", config: { cniVersion: "1.0.0", ipam, mode: "passthru" } },
  { title: "static mac", config: { cniVersion: "1.0.0", ipam, mac: "02:aa:bb:cc:dd:01" } },
  { title: "CNI_ARGS MAC", config: { cniVersion: "1.0.0", ipam }, args: "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:02" },
  { title: "bcqueuelen", config: { cniVersion: "1.0.0", ipam, bcqueuelen: 200 } },
  { title: "no IPAM", config: { cniVersion: "1.0.0" } },
];

interface Observed {
  result: unknown;
  link: unknown;
  addresses: unknown;
  routes: unknown;
}

function observe(binary: string, config: Record<string, unknown>, args: string | undefined): Observed {
  const host = node({ mtu: 1500 });
  const pod = netns("pod");
  const full = { name: "sidebyside", type: "macvlan", master: host.master, ...config };
  const call = {
    command: "ADD" as const,
    containerId: "c0ffee",
    netns: nsPath(pod),
    ifName: "net1",
    path: UPSTREAM_BIN,
    ...(args ? { args } : {}),
  };
  const out = cni(binary, call, full, host.ns);
  expect(out.code, `${binary}: ${out.stdout}${out.stderr}`).toBe(0);
  const state: Observed = {
    result: normalizeResult(out.json, nsPath(pod)),
    link: normalizeLink(links(pod).find((l) => l.ifname === "net1")),
    addresses: ip<{ addr_info: { local: string; prefixlen: number; family: string; scope: string }[] }[]>(pod, "addr", "show", "dev", "net1")
      .flatMap((e) => e.addr_info)
      .filter((a) => a.scope !== "link")
      .map((a) => `${a.local}/${a.prefixlen}`)
      .sort(),
    routes: [...ip<IpRoute[]>(pod, "-4", "route", "show", "table", "all"), ...ip<IpRoute[]>(pod, "-6", "route", "show", "table", "all")]
      .filter((r) => !r.dst.startsWith("fe80") && !r.dst.startsWith("ff00") && r.table !== "local")
      .map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev, scope: r.scope, protocol: r.protocol, metric: r.metric }))
      .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
  };
  // DEL leaves an empty pod behind, for both.
  const del = cni(binary, { ...call, command: "DEL" }, full, host.ns);
  expect(del.code, del.stdout).toBe(0);
  expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
  return state;
}

function normalizeResult(result: unknown, sandbox: string): unknown {
  return JSON.parse(JSON.stringify(result), (key, value: unknown) => {
    if (key === "mac") return "<mac>";
    if (key === "sandbox" && value === sandbox) return "<sandbox>";
    if (value && typeof value === "object" && !Array.isArray(value)) {
      return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)));
    }
    return value;
  });
}

function normalizeLink(link: IpLink | undefined): unknown {
  if (!link) return undefined;
  const data = { ...(link.linkinfo?.info_data ?? {}) };
  return { kind: link.linkinfo?.info_kind, data, mtu: link.mtu, flags: link.flags, operstate: link.operstate };
}

describe("macvlan side by side with upstream v1.9.1", () => {
  test.each(CASES)("$title", ({ config, args }) => {
    const theirs = observe(UPSTREAM, config, args);
    const ours = observe(OURS, config, args);
    expect(ours).toEqual(theirs);
  });
});
