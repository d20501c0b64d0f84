/**
 * whereabouts, compiled, on the file store: the cases every store passes (whereabouts-cases.ts)
 * with a fresh datastore_dir per test and the stored files read back, plus what only this store
 * has: file modes, a datastore_dir that cannot be written, and the config errors no store needs.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanup, cni, sweepStale } from "./harness.ts";
import { WHEREABOUTS, call, driver, ips, whereaboutsCases, type PoolSpec, type StoreUnderTest } from "./whereabouts-cases.ts";

let dir: string;

const fileStore: StoreUnderTest = {
  dir: () => dir,
  keys: () => ({ datastore: "file", datastore_dir: dir }),
  async pool(name, network = "default") {
    return JSON.parse(await this.poolVersion(name, network)) as PoolSpec;
  },
  async poolVersion(name, network = "default") {
    return readFileSync(join(dir, network, "ippools", `${name}.json`), "utf8");
  },
  async reservations(network = "default") {
    const path = join(dir, network, "overlappingrangeipreservations");
    return existsSync(path)
      ? readdirSync(path)
          .map((file) => file.replace(/\.json$/, ""))
          .sort()
      : [];
  },
  async stored() {
    return readdirSync(dir);
  },
  entry: (upstream, network) => ({ ...upstream, network }),
};

const { conf, add } = driver(fileStore);

beforeAll(() => {
  sweepStale();
  expect(existsSync(WHEREABOUTS), `${WHEREABOUTS} missing: run npm run build first`).toBe(true);
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "cnit-whereabouts-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});
afterAll(cleanup);

whereaboutsCases(fileStore);

describe("the file store's files", () => {
  test("files 0600 in 0700 directories", () => {
    ips(add(1));
    ips(add(2));
    expect(statSync(join(dir, "default/ippools/10.40.0.0-24.json")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "default/overlappingrangeipreservations/10.40.0.1.json")).mode & 0o777).toBe(0o600);
    for (const sub of ["default", "default/ippools", "default/overlappingrangeipreservations"]) {
      expect(statSync(join(dir, sub)).mode & 0o777).toBe(0o700);
    }
  });

  test("a store that cannot be written does not fail DEL: the error is logged", () => {
    const out = cni(WHEREABOUTS, call("DEL", 1), conf({ datastore_dir: "/proc/whereabouts" }));
    expect(out.code, out.stdout).toBe(0);
    expect(out.stdout).toBe("");
    expect(out.stderr).toMatch(/DEL of container ctr-1 net1 could not release its addresses: whereabouts file store: cannot create directory/);
  });

  test("STATUS: code 50 when the store cannot be written", () => {
    const config = conf({ datastore_dir: "/proc/whereabouts" }, { cniVersion: "1.1.0" });
    expect(cni(WHEREABOUTS, { command: "STATUS" }, config).json).toMatchObject({ code: 50 });
  });
});

describe("config errors before any store", () => {
  test("VERSION", () => {
    const out = cni(WHEREABOUTS, { command: "VERSION" }, "{}");
    expect(out.json).toEqual({ cniVersion: "1.1.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  test("a config naming no store fails clearly, for ADD and DEL alike", () => {
    const noStore = { cniVersion: "1.0.0", name: "wbnet", type: "macvlan", ipam: { type: "whereabouts", range: "10.40.0.0/24" } };
    for (const command of ["ADD", "DEL"] as const) {
      const out = cni(WHEREABOUTS, call(command, 1), noStore);
      expect(out.json).toMatchObject({ code: 7, msg: "no usable datastore: no kubeconfig is configured" });
      expect(out.json!.details).toMatch(/"datastore": "file"/);
    }
  });

  test('"datastore": "kubernetes" with a kubeconfig that cannot be read is refused, naming the file', () => {
    const out = add(1, conf({ datastore: "kubernetes", kubernetes: { kubeconfig: "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig" } }));
    expect(out.json).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/^cannot use the Kubernetes datastore: kubeconfig \/etc\/cni\/net\.d\/whereabouts\.d\/whereabouts\.kubeconfig: ENOENT/),
    });
  });
});
