/**
 * sbr, compiled, chained after macvlan in real namespaces: a pod with a primary eth0 (a veth with
 * the pod's default route) and net1 from macvlan + sbr. Checked against the kernel's rules and
 * tables, and side by side with upstream sbr v1.9.1.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BIN, UPSTREAM_BIN, cleanup, cni, deleteNetns, ip, netns, node, nsPath, sh, sweepStale, type Node } from "./harness.ts";

const MACVLAN = join(BIN, "macvlan");
const SBR = join(BIN, "sbr");
const UPSTREAM_SBR = join(UPSTREAM_BIN, "sbr");
/** A documentation address: `ip route get` only consults the routing tables, nothing is sent. */
const FAR_AWAY = "198.51.100.7";
const FAR_AWAY_V6 = "2001:db8:ffff::7";

interface Rule {
  priority: number;
  src?: string;
  srclen?: number;
  table: string;
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
}

beforeAll(() => {
  sweepStale();
  expect(existsSync(SBR), `${SBR} missing: run npm run build`).toBe(true);
  expect(existsSync(UPSTREAM_SBR), `${UPSTREAM_SBR} missing: run scripts/build-upstream.sh`).toBe(true);
});
afterEach(cleanup);
afterAll(cleanup);

/** A pod whose eth0 is a veth to the node with the pod's default route, like a primary CNI makes. */
function podWithPrimary(host: Node): string {
  const pod = netns("pod");
  sh("ip", ["-n", host.ns, "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0", "netns", pod]);
  sh("ip", ["-n", pod, "addr", "add", "192.168.100.2/24", "dev", "eth0"]);
  sh("ip", ["-n", pod, "link", "set", "eth0", "up"]);
  sh("ip", ["-n", host.ns, "link", "set", "veth-pod", "up"]);
  sh("ip", ["-n", pod, "route", "add", "default", "via", "192.168.100.1"]);
  return pod;
}

function macvlanConf(addresses: { address: string; gateway?: string }[], master = "m0"): Record<string, unknown> {
  return { cniVersion: "1.0.0", name: "extra", type: "macvlan", master, ipam: { type: "static", addresses } };
}

function sbrConf(prevResult: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { cniVersion: "1.0.0", name: "extra", type: "sbr", prevResult, ...extra };
}

function call(command: "ADD" | "DEL" | "CHECK", pod: string, ifName = "net1") {
  return { command, containerId: `ctr-${pod}`, netns: nsPath(pod), ifName, path: UPSTREAM_BIN };
}

/** macvlan ADD then sbr ADD, as a conflist runs them; returns the final result. */
function chain(
  binary: string,
  host: Node,
  pod: string,
  addresses: { address: string; gateway?: string }[],
  ifName = "net1",
  master = "m0",
  extra: Record<string, unknown> = {},
) {
  const iface = cni(MACVLAN, call("ADD", pod, ifName), macvlanConf(addresses, master), host.ns);
  expect(iface.code, iface.stdout).toBe(0);
  const out = cni(binary, call("ADD", pod, ifName), sbrConf(iface.json, extra), host.ns);
  expect(out.code, `${binary}: ${out.stdout}${out.stderr}`).toBe(0);
  return { macvlanResult: iface.json, result: out.json };
}

function rules(pod: string, family: "4" | "6" = "4"): Rule[] {
  return ip<Rule[]>(pod, `-${family}`, "rule", "show");
}

function table(pod: string, id: string | number, family: "4" | "6" = "4"): IpRoute[] {
  try {
    return ip<IpRoute[]>(pod, `-${family}`, "route", "show", "table", String(id));
  } catch (err) {
    // iproute2 refuses to list a table that holds no route at all.
    if (String(err).includes("FIB table does not exist")) return [];
    throw err;
  }
}

function routeGet(pod: string, dst: string, from?: string): string | undefined {
  const [answer] = ip<{ dev?: string }[]>(pod, "route", "get", dst, ...(from ? ["from", from] : []));
  return answer?.dev;
}

function sbrRules(pod: string, family: "4" | "6" = "4"): { src: string; table: string }[] {
  return (
    rules(pod, family)
      .filter((r) => r.src !== undefined && r.src !== "all")
      // iproute2 leaves srclen out for a host prefix.
      .map((r) => ({ src: `${r.src}/${r.srclen ?? (family === "4" ? 32 : 128)}`, table: r.table }))
  );
}

describe("sbr default mode", () => {
  test("net1's traffic leaves through net1, everything else through eth0", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { macvlanResult, result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    // The result passes prevResult through.
    expect(result).toEqual(macvlanResult);

    expect(sbrRules(pod)).toEqual([{ src: "10.10.0.5/32", table: "100" }]);
    expect(table(pod, 100)).toEqual([
      expect.objectContaining({ dst: "default", gateway: "10.10.0.1", dev: "net1" }),
      expect.objectContaining({ dst: "10.10.0.0/24", dev: "net1", prefsrc: "10.10.0.5" }),
    ]);
    const main = table(pod, "main");
    expect(main.filter((r) => r.dev === "net1")).toEqual([]);
    expect(main).toContainEqual(expect.objectContaining({ dst: "default", gateway: "192.168.100.1", dev: "eth0" }));

    expect(routeGet(pod, FAR_AWAY, "10.10.0.5")).toBe("net1");
    expect(routeGet(pod, FAR_AWAY)).toBe("eth0");
    // IPv6 link-local stays usable on net1: its route is not moved out of main (upstream moves it).
    expect(table(pod, "main", "6")).toContainEqual(expect.objectContaining({ dst: "fe80::/64", dev: "net1" }));
  });

  test("a second extra interface gets the next table", () => {
    const host = node();
    const pod = podWithPrimary(host);
    sh("ip", ["-n", host.ns, "link", "add", "m1", "type", "veth", "peer", "name", "w1", "netns", host.wire]);
    sh("ip", ["-n", host.ns, "link", "set", "m1", "up"]);
    sh("ip", ["-n", host.wire, "link", "set", "w1", "up"]);
    chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    chain(SBR, host, pod, [{ address: "10.20.0.5/24", gateway: "10.20.0.1" }], "net2", "m1");
    expect(sbrRules(pod)).toEqual([
      { src: "10.20.0.5/32", table: "101" },
      { src: "10.10.0.5/32", table: "100" },
    ]);
    expect(table(pod, 101)).toContainEqual(expect.objectContaining({ dst: "default", gateway: "10.20.0.1", dev: "net2" }));
    expect(routeGet(pod, FAR_AWAY, "10.20.0.5")).toBe("net2");
    expect(routeGet(pod, FAR_AWAY, "10.10.0.5")).toBe("net1");
  });

  test("dual stack: each family gets its rule, table and default route", () => {
    const host = node();
    const pod = podWithPrimary(host);
    chain(SBR, host, pod, [
      { address: "10.10.0.5/24", gateway: "10.10.0.1" },
      { address: "fd10::5/64", gateway: "fd10::1" },
    ]);
    expect(sbrRules(pod, "4")).toEqual([{ src: "10.10.0.5/32", table: "100" }]);
    expect(sbrRules(pod, "6")).toEqual([{ src: "fd10::5/128", table: "101" }]);
    expect(table(pod, 101, "6")).toContainEqual(expect.objectContaining({ dst: "default", gateway: "fd10::1", dev: "net1" }));
    expect(table(pod, 101, "6")).toContainEqual(expect.objectContaining({ dst: "fd10::/64", dev: "net1" }));
    expect(table(pod, "main", "6").filter((r) => r.dst === "fd10::/64")).toEqual([]);
    expect(routeGet(pod, FAR_AWAY_V6, "fd10::5")).toBe("net1");
  });

  test("static gateways override prevResult's", () => {
    const host = node();
    const pod = podWithPrimary(host);
    chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }], "net1", "m0", { gateways: ["10.10.0.254"] });
    expect(table(pod, 100)).toContainEqual(expect.objectContaining({ dst: "default", gateway: "10.10.0.254" }));
  });

  test("addSourceHints keeps the subnet route in main with the address as source", () => {
    const host = node();
    const pod = podWithPrimary(host);
    chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }], "net1", "m0", { addSourceHints: true });
    expect(table(pod, "main")).toContainEqual(expect.objectContaining({ dst: "10.10.0.0/24", dev: "net1", prefsrc: "10.10.0.5" }));
    expect(table(pod, 100)).toContainEqual(expect.objectContaining({ dst: "default", gateway: "10.10.0.1" }));
  });

  test("CHECK of the whole chain passes: macvlan's CHECK finds its routes in sbr's table", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    const check = cni(MACVLAN, call("CHECK", pod), { ...macvlanConf([{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]), prevResult: result }, host.ns);
    expect(check.code, check.stdout).toBe(0);
  });

  test("CHECK passes after ADD and fails once a rule is gone", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    expect(cni(SBR, call("CHECK", pod), sbrConf(result), host.ns).code).toBe(0);
    sh("ip", ["-n", pod, "rule", "del", "from", "10.10.0.5", "lookup", "100"]);
    const broken = cni(SBR, call("CHECK", pod), sbrConf(result), host.ns);
    expect(broken.code).not.toBe(0);
    expect(broken.json!.msg).toMatch(/10\.10\.0\.5/);
  });
});

describe("sbr with table", () => {
  test("adds the rules to that table and leaves routes alone", () => {
    const host = node();
    const pod = podWithPrimary(host);
    chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }], "net1", "m0", { table: 500 });
    expect(sbrRules(pod)).toEqual([{ src: "10.10.0.5/32", table: "500" }]);
    expect(table(pod, "main")).toContainEqual(expect.objectContaining({ dst: "10.10.0.0/24", dev: "net1" }));
    expect(table(pod, 500)).toEqual([]);
  });
});

describe("sbr DEL", () => {
  test("removes its rules; a second DEL succeeds", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    expect(cni(SBR, call("DEL", pod), sbrConf(result), host.ns).code).toBe(0);
    expect(sbrRules(pod)).toEqual([]);
    const again = cni(SBR, call("DEL", pod), sbrConf(result), host.ns);
    expect(again.code, again.stdout).toBe(0);
  });

  test("removes the rules even when the interface is already gone", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    sh("ip", ["-n", pod, "link", "del", "net1"]);
    expect(cni(SBR, call("DEL", pod), sbrConf(result), host.ns).code).toBe(0);
    expect(sbrRules(pod)).toEqual([]);
  });

  test("succeeds when CNI_NETNS is a leftover plain file, not a namespace", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    const stale = join(tmpdir(), `cnit-stale-${process.pid}`);
    writeFileSync(stale, "");
    try {
      const del = cni(SBR, { ...call("DEL", pod), netns: stale }, sbrConf(result), host.ns);
      expect(del.code, del.stdout).toBe(0);
    } finally {
      rmSync(stale, { force: true });
    }
  });

  test("succeeds when the namespace is gone or CNI_NETNS is empty, and creates nothing there", () => {
    const host = node();
    const pod = podWithPrimary(host);
    const { result } = chain(SBR, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
    deleteNetns(pod);
    expect(cni(SBR, call("DEL", pod), sbrConf(result), host.ns).code).toBe(0);
    expect(existsSync(nsPath(pod))).toBe(false);
    const noNetns = cni(SBR, { ...call("DEL", pod), netns: undefined }, sbrConf(result), host.ns);
    expect(noNetns.code, noNetns.stdout).toBe(0);
  });
});

describe("sbr bad input: a CNI error, nothing added", () => {
  function expectUntouched(out: ReturnType<typeof cni>, pod: string, pattern: RegExp): void {
    expect(out.code).not.toBe(0);
    expect(out.json, out.stdout).toBeDefined();
    expect(String(out.json!.msg)).toMatch(pattern);
    expect(sbrRules(pod)).toEqual([]);
    expect(table(pod, "main")).toContainEqual(expect.objectContaining({ dev: "net1" }));
  }

  function podWithNet1(): { host: Node; pod: string; iface: Record<string, unknown> } {
    const host = node();
    const pod = podWithPrimary(host);
    const iface = cni(MACVLAN, call("ADD", pod), macvlanConf([{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]), host.ns);
    expect(iface.code).toBe(0);
    return { host, pod, iface: iface.json! };
  }

  test("no prevResult", () => {
    const { host, pod } = podWithNet1();
    expectUntouched(cni(SBR, call("ADD", pod), sbrConf(undefined), host.ns), pod, /chained/);
  });

  test("malformed JSON", () => {
    const { host, pod } = podWithNet1();
    const out = cni(SBR, call("ADD", pod), '{"cniVersion":"1.0.0",', host.ns);
    expectUntouched(out, pod, /pars/);
    expect(out.json!.code).toBe(6);
  });

  test("CNI_IFNAME is not in the pod", () => {
    const { host, pod, iface } = podWithNet1();
    expectUntouched(cni(SBR, call("ADD", pod, "net7"), sbrConf(iface), host.ns), pod, /net7/);
  });

  test("a gateway the kernel cannot route via: the rule added before is taken back", () => {
    const { host, pod, iface } = podWithNet1();
    const out = cni(SBR, call("ADD", pod), sbrConf(iface, { gateways: ["192.0.2.1"] }), host.ns);
    expectUntouched(out, pod, /default route via 192\.0\.2\.1/);
    expect(out.json!.code).toBe(100);
  });

  test("two gateways of one family", () => {
    const { host, pod, iface } = podWithNet1();
    const out = cni(SBR, call("ADD", pod), sbrConf(iface, { gateways: ["10.10.0.1", "10.10.0.2"] }), host.ns);
    expectUntouched(out, pod, /multiple IPv4/);
    expect(out.json!.code).toBe(7);
  });
});

describe("sbr side by side with upstream v1.9.1", () => {
  /**
   * Rules and tables of the pod, without what differs on purpose (tested below): each table is
   * compared in the family whose rule sends traffic there (upstream also copies the other
   * family's routes into it, where no lookup reaches them), and main's IPv6 link-local route.
   */
  function state(pod: string): unknown {
    const special = ["local", "main", "default"];
    const tables4 = [...new Set(rules(pod, "4").map((r) => r.table))].filter((t) => !special.includes(t));
    const tables6 = [...new Set(rules(pod, "6").map((r) => r.table))].filter((t) => !special.includes(t));
    const strip = (routes: IpRoute[]) => routes.filter((r) => !r.dst.startsWith("fe80"));
    return {
      rules4: sbrRules(pod, "4"),
      rules6: sbrRules(pod, "6"),
      main4: table(pod, "main", "4"),
      main6: strip(table(pod, "main", "6")),
      tables4: Object.fromEntries(tables4.map((t) => [t, table(pod, t, "4")])),
      tables6: Object.fromEntries(tables6.map((t) => [t, table(pod, t, "6")])),
    };
  }

  const CHAINS: { title: string; addresses: { address: string; gateway?: string }[]; extra?: Record<string, unknown> }[] = [
    { title: "IPv4 with gateway", addresses: [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }] },
    { title: "IPv4 without gateway", addresses: [{ address: "10.10.0.5/24" }] },
    {
      title: "dual stack",
      addresses: [
        { address: "10.10.0.5/24", gateway: "10.10.0.1" },
        { address: "fd10::5/64", gateway: "fd10::1" },
      ],
    },
    { title: "table 500", addresses: [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }], extra: { table: 500 } },
  ];

  test.each(CHAINS)("$title", ({ addresses, extra }) => {
    const observe = (binary: string) => {
      const host = node();
      const pod = podWithPrimary(host);
      const { result } = chain(binary, host, pod, addresses, "net1", "m0", extra ?? {});
      const seen = { result, state: state(pod) };
      expect(cni(binary, call("DEL", pod), sbrConf(result, extra ?? {}), host.ns).code).toBe(0);
      return { ...seen, afterDel: sbrRules(pod, "4").concat(sbrRules(pod, "6")) };
    };
    const theirs = observe(UPSTREAM_SBR);
    const ours = observe(SBR);
    const normalize = (o: ReturnType<typeof observe>) =>
      JSON.parse(
        JSON.stringify(o)
          .replace(/cnit\d+-pod\d+/g, "<pod>")
          .replace(/"mac":"[^"]+"/g, '"mac":"<mac>"'),
      );
    expect(normalize(ours)).toEqual(normalize(theirs));
  });

  test("the documented difference: upstream moves the other family's routes into a table, we leave them", () => {
    const observe = (binary: string) => {
      const host = node();
      const pod = podWithPrimary(host);
      chain(binary, host, pod, [{ address: "10.10.0.5/24", gateway: "10.10.0.1" }]);
      return {
        ipv6InIpv4Table: table(pod, 100, "6").map((r) => r.dst),
        linkLocalInMain: table(pod, "main", "6").some((r) => r.dst === "fe80::/64" && r.dev === "net1"),
      };
    };
    expect(observe(UPSTREAM_SBR)).toEqual({ ipv6InIpv4Table: ["fe80::/64"], linkLocalInMain: false });
    expect(observe(SBR)).toEqual({ ipv6InIpv4Table: [], linkLocalInMain: true });
  });
});
