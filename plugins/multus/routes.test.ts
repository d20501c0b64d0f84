/** The default-route rewrite of a cached result (routes.ts `withRoutes`), against upstream's rules. */
import { describe, expect, it } from "vitest";
import type { JsonObject } from "../../shared/cni/types.ts";
import { withRoutes } from "./routes.ts";

const result: JsonObject = {
  cniVersion: "1.0.0",
  ips: [{ address: "10.1.0.5/24", gateway: "10.1.0.1" }],
  routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }, { dst: "10.2.0.0/16" }, { dst: "::0/0", gw: "fd00::1" }],
};

describe("withRoutes", () => {
  it("drops the filtered family's default routes only", () => {
    expect(withRoutes(result, { deleteV4: true, deleteV6: false, gateways: [] }).routes).toEqual([{ dst: "10.2.0.0/16" }, { dst: "::0/0", gw: "fd00::1" }]);
    expect(withRoutes(result, { deleteV4: false, deleteV6: true, gateways: [] }).routes).toEqual([
      { dst: "0.0.0.0/0", gw: "10.1.0.1" },
      { dst: "10.2.0.0/16" },
    ]);
  });

  it("adds a default route per requested gateway, in upstream's spelling", () => {
    expect(withRoutes(result, { deleteV4: true, deleteV6: true, gateways: ["10.1.0.254", "fd00::fe"] }).routes).toEqual([
      { dst: "10.2.0.0/16" },
      { dst: "0.0.0.0/0", gw: "10.1.0.254" },
      { dst: "::0/0", gw: "fd00::fe" },
    ]);
  });

  it("leaves out routes when none remain, and keeps every other key", () => {
    const only = { cniVersion: "0.4.0", dns: {}, routes: [{ dst: "0.0.0.0/0" }] };
    expect(withRoutes(only, { deleteV4: true, deleteV6: true, gateways: [] })).toEqual({ cniVersion: "0.4.0", dns: {} });
  });
});
