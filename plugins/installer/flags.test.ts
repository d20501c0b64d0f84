/** The installer's command line: upstream's flag forms, the defaults, and what is refused. */
import { describe, expect, test } from "vitest";
import { FlagError, parseFlags, usage } from "./flags.ts";

const ENV = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" };

describe("install flags", () => {
  test("defaults: the node mounted under /host, the service from the environment", () => {
    const o = parseFlags([], ENV, "/usr/src/cni-plugins/bin/cni-plugins");
    expect(o).toMatchObject({
      sourceBinary: "/usr/src/cni-plugins/bin/cni-plugins",
      cniBinDir: "/host/opt/cni/bin",
      cniConfDir: "/host/etc/cni/net.d",
      cniConfDirHost: "/etc/cni/net.d",
      serviceAccountDir: "/var/run/secrets/kubernetes.io/serviceaccount",
      kubernetes: { protocol: "https", host: "10.96.0.1", port: "443" },
      multus: { kubeconfigFileHost: "/etc/cni/net.d/multus.d/multus.kubeconfig", logFile: "/var/log/multus.log", cleanupConfigOnExit: true, skip: false },
      whereabouts: { kubeconfigFileHost: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig", logFile: "/var/log/whereabouts.log", namespace: "" },
      once: false,
      pollIntervalMs: 1000,
    });
    expect(parseFlags([], {}, "/x").kubernetes).toBeUndefined();
    expect(parseFlags([], { ...ENV, KUBERNETES_SERVICE_PROTOCOL: "http", WHEREABOUTS_NAMESPACE: "ipam" }, "/x")).toMatchObject({
      kubernetes: { protocol: "http" },
      whereabouts: { namespace: "ipam" },
    });
  });

  test("--name=value, --name value, bare and explicit booleans", () => {
    const o = parseFlags(
      [
        "--cni-bin-dir=/b",
        "--cni-conf-dir",
        "/c",
        "--once",
        "--cleanup-config-on-exit=false",
        "-skip-multus",
        "--plugins",
        "multus, passthru,",
        "--poll-interval-ms=50",
      ],
      ENV,
      "/x",
    );
    expect(o).toMatchObject({
      cniBinDir: "/b",
      cniConfDir: "/c",
      once: true,
      multus: { cleanupConfigOnExit: false, skip: true },
      plugins: ["multus", "passthru"],
      pollIntervalMs: 50,
    });
    expect(parseFlags(["--multus-log-file="], ENV, "/x").multus.logFile).toBe("");
  });

  test.each([
    [["--bogus"], "unknown flag --bogus"],
    [["install"], 'unexpected argument "install"'],
    [["--cni-bin-dir"], "--cni-bin-dir needs a value"],
    [["--once=yes"], '--once takes true or false, not "yes"'],
    [["--poll-interval-ms=0"], "--poll-interval-ms takes a positive integer"],
    [["--multus-log-level=info"], "--multus-log-level must be one of debug, verbose, error, panic"],
    [["--multus-master-cni-file-name=/etc/cni/net.d/10.conf"], "is a file name in --cni-conf-dir, not a path"],
  ])("%j is refused", (args, message) => {
    expect(() => parseFlags(args, ENV, "/x")).toThrow(FlagError);
    expect(() => parseFlags(args, ENV, "/x")).toThrow(message);
  });

  test("the help text names every flag and its default", () => {
    const text = usage(ENV, "/x");
    expect(text).toContain('--cni-bin-dir <string>  the node\'s CNI bin dir, as mounted in the pod (default "/host/opt/cni/bin")');
    expect(text).toContain("--cleanup-config-on-exit  remove the multus conf on SIGTERM (default true)");
  });
});
