import { describe, expect, it } from "vitest";
import { readEnvironment, validateInterfaceName } from "./env.ts";
import { thrown } from "./test-util.ts";

const FULL = {
  CNI_CONTAINERID: "abc-123_x.y",
  CNI_NETNS: "/var/run/netns/pod",
  CNI_IFNAME: "eth0",
  CNI_ARGS: "IgnoreUnknown=1",
  CNI_PATH: "/opt/cni/bin::/usr/lib/cni",
};

describe("readEnvironment", () => {
  it("returns null when CNI_COMMAND is unset or empty", () => {
    expect(readEnvironment({})).toBeNull();
    expect(readEnvironment({ ...FULL, CNI_COMMAND: "" })).toBeNull();
  });

  it("rejects an unknown command, case-sensitively", () => {
    expect(thrown(() => readEnvironment({ ...FULL, CNI_COMMAND: "FOO" }))).toEqual({
      code: 4,
      msg: "unknown CNI_COMMAND: FOO",
      details: "",
    });
    expect(thrown(() => readEnvironment({ ...FULL, CNI_COMMAND: "add" })).msg).toBe("unknown CNI_COMMAND: add");
  });

  it("reads every variable for ADD and splits CNI_PATH, dropping empty entries", () => {
    expect(readEnvironment({ ...FULL, CNI_COMMAND: "ADD" })).toEqual({
      command: "ADD",
      containerId: "abc-123_x.y",
      netns: "/var/run/netns/pod",
      ifName: "eth0",
      args: "IgnoreUnknown=1",
      path: ["/opt/cni/bin", "/usr/lib/cni"],
    });
  });

  it.each(["ADD", "CHECK"])("%s requires container ID, netns, ifname and path", (verb) => {
    expect(thrown(() => readEnvironment({ CNI_COMMAND: verb }))).toEqual({
      code: 4,
      msg: "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
      details: "",
    });
  });

  it("DEL does not require CNI_NETNS", () => {
    expect(thrown(() => readEnvironment({ CNI_COMMAND: "DEL" })).msg).toBe("required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing");
    const env = readEnvironment({ ...FULL, CNI_COMMAND: "DEL", CNI_NETNS: "" });
    expect(env?.netns).toBe("");
  });

  it.each(["STATUS", "GC"])("%s requires only CNI_PATH", (verb) => {
    expect(thrown(() => readEnvironment({ CNI_COMMAND: verb })).msg).toBe("required env variables [CNI_PATH] missing");
    expect(readEnvironment({ CNI_COMMAND: verb, CNI_PATH: "/bin" })).toEqual({
      command: verb,
      containerId: "",
      netns: "",
      ifName: "",
      args: "",
      path: ["/bin"],
    });
  });

  it.each(["STATUS", "GC", "VERSION"])("%s does not validate variables it does not need", (verb) => {
    const env = readEnvironment({ CNI_COMMAND: verb, CNI_PATH: "/bin", CNI_CONTAINERID: "bad id", CNI_IFNAME: "a/b" });
    expect(env?.containerId).toBe("bad id");
  });

  it("VERSION needs nothing", () => {
    expect(readEnvironment({ CNI_COMMAND: "VERSION" })).toEqual({
      command: "VERSION",
      containerId: "",
      netns: "",
      ifName: "",
      args: "",
      path: [],
    });
  });

  it("counts an empty variable as missing and keeps the fixed order", () => {
    const env = { ...FULL, CNI_COMMAND: "ADD", CNI_PATH: "", CNI_NETNS: "", CNI_IFNAME: "" };
    expect(thrown(() => readEnvironment(env)).msg).toBe("required env variables [CNI_NETNS,CNI_IFNAME,CNI_PATH] missing");
  });

  it("never requires CNI_ARGS", () => {
    expect(readEnvironment({ ...FULL, CNI_COMMAND: "ADD", CNI_ARGS: undefined })?.args).toBe("");
  });

  it("rejects a bad container ID with the ID as details", () => {
    for (const id of ["-leading-dash", "has space", "semi;colon", "_x", "a/b"]) {
      expect(thrown(() => readEnvironment({ ...FULL, CNI_COMMAND: "ADD", CNI_CONTAINERID: id }))).toEqual({
        code: 4,
        msg: "invalid characters in containerID",
        details: id,
      });
    }
  });

  it("reports an invalid value before missing variables, wherever it sits", () => {
    // Upstream validates values during its pass and lists missing names only afterwards.
    const early = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "bad id", CNI_IFNAME: "eth0" };
    expect(thrown(() => readEnvironment(early)).msg).toBe("invalid characters in containerID");
    const late = { CNI_COMMAND: "ADD", CNI_IFNAME: "a/b" };
    expect(thrown(() => readEnvironment(late)).msg).toBe("interface name contains / or : or whitespace characters");
  });

  it("validates the interface name for ADD, DEL and CHECK", () => {
    for (const verb of ["ADD", "DEL", "CHECK"]) {
      expect(thrown(() => readEnvironment({ ...FULL, CNI_COMMAND: verb, CNI_IFNAME: ".." })).msg).toBe("interface name is . or ..");
    }
  });
});

describe("validateInterfaceName", () => {
  it("accepts names of up to 15 bytes", () => {
    expect(() => validateInterfaceName("eth0")).not.toThrow();
    expect(() => validateInterfaceName("a".repeat(15))).not.toThrow();
    expect(() => validateInterfaceName("net1.100")).not.toThrow();
  });

  it("rejects names over 15 bytes, counting bytes rather than characters", () => {
    expect(thrown(() => validateInterfaceName("a".repeat(16)))).toEqual({
      code: 4,
      msg: "interface name is too long",
      details: "interface name should be less than 16 characters",
    });
    // Eight characters, sixteen bytes.
    expect(thrown(() => validateInterfaceName("éééééééé")).msg).toBe("interface name is too long");
  });

  it("rejects . and ..", () => {
    expect(thrown(() => validateInterfaceName(".")).msg).toBe("interface name is . or ..");
    expect(thrown(() => validateInterfaceName("..")).msg).toBe("interface name is . or ..");
    expect(() => validateInterfaceName("...")).not.toThrow();
  });

  it.each(["a/b", "a:b", "a b", "a\tb", "a\nb", "a\u00a0b", "a\u0085b"])("rejects %j", (name) => {
    expect(thrown(() => validateInterfaceName(name))).toEqual({
      code: 4,
      msg: "interface name contains / or : or whitespace characters",
      details: "",
    });
  });

  it("rejects an empty name", () => {
    expect(thrown(() => validateInterfaceName("")).msg).toBe("interface name is empty");
  });
});
