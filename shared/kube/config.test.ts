import { afterAll, describe, expect, test } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeconfigError, currentToken, inClusterConnection, loadKubeconfig, resolveKubeconfig } from "./config.ts";

const dir = mkdtempSync(join(tmpdir(), "kubeconfig-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The project's Bun runtime (package.json), which the plugins are compiled with. */
const BUN = join(import.meta.dirname, "../../node_modules/.bin/bun");

/**
 * loadKubeconfig as the plugins run it: under Bun, whose YAML parser is the only one config.ts
 * uses (Node has none). One `bun` process per call, running this very module.
 */
function loadUnderBun(path: string): { connection: unknown } | { error: string } {
  const script = `
    const { loadKubeconfig } = await import(process.argv[1]);
    try {
      console.log(JSON.stringify({ connection: await loadKubeconfig(process.argv[2]) }));
    } catch (err) {
      console.log(JSON.stringify({ error: \`\${err.name}: \${err.message}\` }));
    }`;
  return JSON.parse(execFileSync(BUN, ["-e", script, join(import.meta.dirname, "config.ts"), path], { encoding: "utf8" }));
}

const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

function config(overrides: { cluster?: object; user?: object; context?: object } = {}) {
  return {
    apiVersion: "v1",
    kind: "Config",
    "current-context": "ctx",
    contexts: [{ name: "ctx", context: { cluster: "c", user: "u", ...overrides.context } }],
    clusters: [{ name: "c", cluster: { server: "https://10.0.0.1:6443/", ...overrides.cluster } }],
    users: [{ name: "u", user: { token: "abc", ...overrides.user } }],
  };
}

describe("kubeconfig", () => {
  test("token, inline CA, namespace of the current context", () => {
    const c = resolveKubeconfig(
      config({ cluster: { "certificate-authority-data": Buffer.from(PEM).toString("base64") }, context: { namespace: "whereabouts" } }),
      "/k",
    );
    expect(c).toEqual({ server: "https://10.0.0.1:6443", ca: PEM, insecureSkipTlsVerify: false, token: "abc", namespace: "whereabouts" });
  });

  test("a server without a scheme is https://, as client-go reads it", () => {
    expect(resolveKubeconfig(config({ cluster: { server: "api.example:6443" } }), "/k").server).toBe("https://api.example:6443");
  });

  test("no namespace in the context means kube-system, as upstream", () => {
    expect(resolveKubeconfig(config(), "/k").namespace).toBe("kube-system");
  });

  test("files are read relative to the kubeconfig; the token file wins over the token", () => {
    writeFileSync(join(dir, "ca.crt"), PEM);
    writeFileSync(join(dir, "token"), "from-file\n");
    writeFileSync(join(dir, "client.crt"), "CERT");
    writeFileSync(join(dir, "client.key"), "KEY");
    const c = resolveKubeconfig(
      config({
        cluster: { "certificate-authority": "ca.crt", "insecure-skip-tls-verify": true },
        user: { tokenFile: "token", "client-certificate": "client.crt", "client-key": join(dir, "client.key") },
      }),
      join(dir, "kubeconfig"),
    );
    expect(c.ca).toBe(PEM);
    expect(c.insecureSkipTlsVerify).toBe(true);
    expect(c.clientCert).toBe("CERT");
    expect(c.clientKey).toBe("KEY");
    expect(currentToken(c)).toBe("from-file");
  });

  test("YAML, as kubectl and upstream's installer write it, read by Bun's parser as in the plugins", () => {
    const path = join(dir, "yaml.kubeconfig");
    writeFileSync(
      path,
      [
        "apiVersion: v1",
        "clusters:",
        "- cluster:",
        "    server: https://127.0.0.1:443",
        `    certificate-authority-data: ${Buffer.from(PEM).toString("base64")}`,
        "    insecure-skip-tls-verify: true",
        "  name: local",
        "contexts:",
        "- context:",
        "    cluster: local",
        "    namespace: kube-system",
        "    user: whereabouts",
        "  name: whereabouts-context",
        "current-context: whereabouts-context",
        "kind: Config",
        "users:",
        "- name: whereabouts",
        "  user:",
        '    token: "t0k"',
        "",
      ].join("\n"),
    );
    expect(loadUnderBun(path)).toEqual({
      connection: { server: "https://127.0.0.1:443", ca: PEM, token: "t0k", namespace: "kube-system", insecureSkipTlsVerify: true },
    });
  });

  test("a file that is neither JSON nor YAML, read as the plugins read it", () => {
    const path = join(dir, "broken.kubeconfig");
    writeFileSync(path, "clusters: [\n  - {server: \n");
    expect(loadUnderBun(path)).toEqual({ error: expect.stringMatching(/^KubeconfigError: kubeconfig .*broken.kubeconfig: not valid YAML: /) });
  });

  test("outside Bun, YAML is not read at all: there is no second parser to drift from Bun's", async () => {
    const path = join(dir, "yaml-under-node.kubeconfig");
    writeFileSync(path, "current-context: c\n");
    await expect(loadKubeconfig(path)).rejects.toThrow(/not valid YAML: YAML is read by Bun's parser, and this is not Bun/);
  });

  test.each([
    [{ ...config(), "current-context": "" }, /no current-context/],
    [{ ...config(), "current-context": "other" }, /no context named "other"/],
    [config({ context: { cluster: "nope" } }), /no cluster named "nope"/],
    [config({ cluster: { server: "" } }), /has no server/],
    [config({ cluster: { server: "ftp://10.0.0.1" } }), /neither https:\/\/ nor http:\/\//],
    [config({ cluster: { server: "https://[10.0.0.1" } }), /is not a URL/],
    [config({ cluster: { "certificate-authority": "/nonexistent/ca" } }), /certificate-authority \/nonexistent\/ca/],
    ["just a string", /not an object/],
  ])("a broken kubeconfig says what is wrong (%#)", (document, message) => {
    expect(() => resolveKubeconfig(document, "/k")).toThrow(KubeconfigError);
    expect(() => resolveKubeconfig(document, "/k")).toThrow(message);
  });

  test("a missing file", async () => {
    await expect(loadKubeconfig(join(dir, "missing"))).rejects.toThrow(/kubeconfig .*missing/);
  });
});

describe("in-cluster", () => {
  test("the service account's token file, CA and namespace; IPv6 service host bracketed", () => {
    writeFileSync(join(dir, "ca.crt"), PEM);
    writeFileSync(join(dir, "namespace"), "whereabouts\n");
    const c = inClusterConnection({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }, dir);
    expect(c).toEqual({
      server: "https://[fd00::1]:443",
      ca: PEM,
      insecureSkipTlsVerify: false,
      tokenFile: join(dir, "token"),
      namespace: "whereabouts",
    });
  });

  test("outside a pod it says so", () => {
    expect(() => inClusterConnection({}, dir)).toThrow(/KUBERNETES_SERVICE_HOST/);
  });
});
