/** libcni's subdirectory chain and multus' auxiliary chain (networks.ts), on files in a temporary directory. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CniError } from "../../shared/cni/errors.ts";
import { loadMultusConfig } from "./config.ts";
import { auxiliaryChain, withSubdirectoryPlugins } from "./networks.ts";

let dir = "";
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "multus-networks-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const list = '{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico","kubernetes":{"kubeconfig":"/etc/k"}}]}';

describe("withSubdirectoryPlugins", () => {
  it("keeps the text as written when the subdirectory is absent or empty", () => {
    expect(withSubdirectoryPlugins(list, dir)).toBe(list);
    mkdirSync(join(dir, "k8s-pod-network"));
    expect(withSubdirectoryPlugins(list, dir)).toBe(list);
  });

  it("appends the .conf files of <dir>/<name>/ in name order, every key kept", () => {
    const sub = join(dir, "k8s-pod-network");
    mkdirSync(sub);
    writeFileSync(join(sub, "20-b.conf"), '{"type":"bandwidth","capabilities":{"bandwidth":true}}');
    writeFileSync(join(sub, "10-a.conf"), '{"type":"portmap","snat":true}');
    writeFileSync(join(sub, "30-c.json"), '{"type":"ignored"}');
    expect(JSON.parse(withSubdirectoryPlugins(list, dir))).toEqual({
      cniVersion: "1.0.0",
      name: "k8s-pod-network",
      plugins: [
        { type: "calico", kubernetes: { kubeconfig: "/etc/k" } },
        { type: "portmap", snat: true },
        { type: "bandwidth", capabilities: { bandwidth: true } },
      ],
    });
  });

  it("reads nothing more with loadOnlyInlinedPlugins", () => {
    const inlined = '{"cniVersion":"1.0.0","name":"n","loadOnlyInlinedPlugins":true,"plugins":[{"type":"ptp"}]}';
    mkdirSync(join(dir, "n"));
    writeFileSync(join(dir, "n", "a.conf"), '{"type":"portmap"}');
    expect(withSubdirectoryPlugins(inlined, dir)).toBe(inlined);
  });

  it("refuses a name that is not a file name, and a plugin without type", () => {
    expect(() => withSubdirectoryPlugins('{"name":"../x","plugins":[]}', dir)).toThrow(CniError);
    mkdirSync(join(dir, "n"));
    writeFileSync(join(dir, "n", "a.conf"), '{"snat":true}');
    expect(() => withSubdirectoryPlugins('{"name":"n","plugins":[{"type":"ptp"}]}', dir)).toThrow(/missing 'type'/);
  });
});

describe("auxiliaryChain", () => {
  const conf = (extra: object) => loadMultusConfig(JSON.stringify({ cniVersion: "1.0.0", name: "multus", type: "multus", ...extra }));

  it("is a passthru plugin followed by the chain directory's plugins, next to clusterNetwork", () => {
    mkdirSync(join(dir, "aux"));
    writeFileSync(join(dir, "aux", "tuning.conf"), '{"type":"tuning","sysctl":{"net.core.somaxconn":"500"}}');
    const chain = auxiliaryChain(conf({ clusterNetwork: join(dir, "10-primary.conflist"), auxiliaryCNIChainName: "aux" }));
    expect(chain?.raw).toEqual({
      cniVersion: "1.0.0",
      name: "aux",
      plugins: [
        { type: "passthru", name: "passthru-cni" },
        { type: "tuning", sysctl: { "net.core.somaxconn": "500" } },
      ],
    });
  });

  it("is nothing when the directory adds no plugin, or no chain is named", () => {
    expect(auxiliaryChain(conf({ clusterNetwork: join(dir, "x.conflist"), auxiliaryCNIChainName: "aux" }))).toBeUndefined();
    expect(auxiliaryChain(conf({ clusterNetwork: join(dir, "x.conflist") }))).toBeUndefined();
  });

  it("needs clusterNetwork to be a path", () => {
    expect(() => auxiliaryChain(conf({ clusterNetwork: "primary", auxiliaryCNIChainName: "aux" }))).toThrow(/must be a path/);
  });
});
