/** Unit tests of NetworkAttachmentDefinition handling (nad.ts): spec.config, confDir lookup, annotations, isolation. */
import { describe, expect, test } from "vitest";
import { thrown } from "../../shared/cni/test-util.ts";
import {
  type ConfDir,
  checkNamespaceAccess,
  delegateFromConfig,
  delegateFromNad,
  findConfByName,
  nadAppliesToNode,
  parseNodeSelector,
  resourceNameOf,
} from "./nad.ts";

function dir(files: Record<string, string>): ConfDir {
  return {
    list: () => Object.keys(files),
    read: (file) => {
      const text = files[file];
      if (text === undefined) throw new Error(`ENOENT ${file}`);
      return text;
    },
  };
}
const empty = dir({});

describe("spec.config", () => {
  test("one plugin, bytes kept as written", () => {
    const config = '{ "cniVersion": "0.3.1", "name": "macvlan-conf", "type": "macvlan", "master": "eth0", "big": 12345678901234567890 }';
    const delegate = delegateFromNad({ namespace: "default", name: "macvlan-conf", config }, empty);
    expect(delegate).toMatchObject({ name: "default/macvlan-conf", bytes: config, isConfList: false });
    expect(delegate.list.name).toBe("macvlan-conf");
    expect(delegate.list.plugins.map((plugin) => plugin.type)).toEqual(["macvlan"]);
  });

  test("a conflist", () => {
    const config = JSON.stringify({ cniVersion: "1.0.0", name: "chain", plugins: [{ type: "bridge" }, { type: "tuning", capabilities: { mac: true } }] });
    const delegate = delegateFromNad({ namespace: "ns", name: "nad", config }, empty);
    expect(delegate).toMatchObject({ name: "ns/nad", isConfList: true });
    // The CNI network name (libcni's cache key) stays the config's.
    expect(delegate.list.name).toBe("chain");
    expect(delegate.list.plugins[1]?.capabilities).toEqual(["mac"]);
  });

  test.each([
    ['{"cniVersion":"0.3.1","type":"macvlan"}', '{"cniVersion":"0.3.1","type":"macvlan","name":"nad"}'],
    ['{"name":"","type":"macvlan"}', '{"name":"","type":"macvlan","name":"nad"}'],
    ['{"name":null,"type":"macvlan"}\n', '{"name":null,"type":"macvlan","name":"nad"}\n'],
    ['{ "plugins": [{"type":"bridge"}] }', '{ "plugins": [{"type":"bridge"}],"name":"nad"}'],
  ])("name injected when absent: %s", (config, bytes) => {
    const delegate = delegateFromNad({ namespace: "ns", name: "nad", config }, empty);
    expect(delegate.bytes).toBe(bytes);
    expect(delegate.list.name).toBe("nad");
  });

  test.each([
    ['{"name":"x"}', "delegate must have the 'type' or 'plugin' field"],
    ['{"name":"x","plugins":[]}', "delegate must have the 'type' or 'plugin' field"],
    ['{"name":"x","plugins":[{"cniVersion":"1.0.0"}]}', "delegate must have the 'type' or 'plugin' field"],
    ["[1]", "expected a JSON object"],
    ["{", "failed to parse"],
  ])("%s is refused", (config, message) => {
    expect(thrown(() => delegateFromNad({ namespace: "ns", name: "nad", config }, empty)).msg).toContain(message);
  });

  test("a config from the multus conf keeps its own name", () => {
    expect(delegateFromConfig('{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}').name).toBe("cbr0");
  });
});

describe("empty spec: the conf of that name in confDir", () => {
  const files = dir({
    "10-flannel.conflist": '{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"}]}',
    "20-b.conf": '{"cniVersion":"0.3.1","name":"nad","type":"bridge"}',
    "30-b.json": '{"cniVersion":"0.3.1","name":"nad","type":"ignored"}',
    "notes.txt": "not json",
    "05-noType.conf": '{"cniVersion":"0.3.1","name":"list-in-conf","plugins":[]}',
  });

  test("first by file name among .conf, .json, .conflist", () => {
    const delegate = delegateFromNad({ namespace: "ns", name: "nad" }, files);
    expect(delegate).toMatchObject({ name: "ns/nad", isConfList: false });
    expect(delegate.list.plugins[0]?.type).toBe("bridge");
    expect(findConfByName("cbr0", files)).toContain("flannel");
  });

  test("no match, no files, a .conf without type", () => {
    expect(thrown(() => findConfByName("missing", files)).msg).toContain('no network available in the name "missing"');
    expect(thrown(() => findConfByName("x", empty)).msg).toContain("no networks found");
    expect(thrown(() => findConfByName("list-in-conf", files)).msg).toContain("perhaps this is a .conflist?");
  });

  test("a directory that cannot be listed has no networks", () => {
    const broken: ConfDir = {
      list: () => {
        throw new Error("EACCES");
      },
      read: () => "",
    };
    expect(thrown(() => findConfByName("x", broken)).msg).toContain("no networks found");
  });
});

describe("annotations", () => {
  test("resourceName", () => {
    expect(resourceNameOf({ namespace: "n", name: "x", annotations: { "k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_vf" } })).toBe("intel.com/sriov_vf");
    expect(resourceNameOf({ namespace: "n", name: "x" })).toBeUndefined();
  });

  test("nodeSelector: key=value pairs, all must match", () => {
    expect(parseNodeSelector(" zone = a ,pool=gpu")).toEqual({ zone: "a", pool: "gpu" });
    expect(parseNodeSelector(undefined)).toEqual({});
    expect(thrown(() => parseNodeSelector("zone")).msg).toContain('nodeSelector annotation "zone"');
    const nad = { namespace: "n", name: "x", annotations: { "k8s.v1.cni.cncf.io/nodeSelector": "zone=a,pool=gpu" } };
    expect(nadAppliesToNode(nad, { zone: "a", pool: "gpu", other: "1" })).toBe(true);
    expect(nadAppliesToNode(nad, { zone: "a" })).toBe(false);
    expect(nadAppliesToNode(nad, { zone: "b", pool: "gpu" })).toBe(false);
    expect(nadAppliesToNode({ namespace: "n", name: "x" }, {})).toBe(true);
  });
});

describe("namespace isolation", () => {
  const isolated = { namespaceIsolation: true, globalNamespaces: ["default", "shared"] };
  test("own namespace and global namespaces only", () => {
    expect(() => checkNamespaceAccess(isolated, "team-a", "team-a")).not.toThrow();
    expect(() => checkNamespaceAccess(isolated, "team-a", "shared")).not.toThrow();
    expect(() => checkNamespaceAccess({ ...isolated, namespaceIsolation: false }, "team-a", "team-b")).not.toThrow();
    expect(thrown(() => checkNamespaceAccess(isolated, "team-a", "team-b")).msg).toBe(
      "namespace isolation enabled, annotation violates permission, pod is in namespace team-a but refers to target namespace team-b",
    );
  });
});
