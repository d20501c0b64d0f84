import { describe, expect, test } from "vitest";
import { poolPatch } from "./kubernetes.ts";

describe("the pool write: a JSON Patch guarding only the entries it touches", () => {
  const a = { id: "ctr-a", podref: "default/a", ifname: "net1" };
  const b = { id: "ctr-b", podref: "default/b", ifname: "net1" };
  const pool = { metadata: { name: "p", resourceVersion: "5" }, spec: { range: "10.0.0.0/24", allocations: { "1": a, "2": b } } };

  test("an added entry is tested absent; no resourceVersion test, so other writers' entries do not conflict", () => {
    const next = new Map([
      ["1", a],
      ["2", b],
      ["3", { id: "ctr-c", podref: "default/c", ifname: "net1" }],
    ]);
    expect(poolPatch(pool, "10.0.0.0/24", next)).toEqual([
      { op: "test", path: "/spec/allocations/3", value: null },
      { op: "add", path: "/spec/allocations/3", value: { id: "ctr-c", podref: "default/c", ifname: "net1" } },
    ]);
  });

  test("a removed or replaced entry is tested to be as read", () => {
    const next = new Map([["2", { ...b, id: "ctr-b2" }]]);
    expect(poolPatch(pool, "10.0.0.0/24", next)).toEqual([
      { op: "test", path: "/spec/allocations/1", value: a },
      { op: "remove", path: "/spec/allocations/1" },
      { op: "test", path: "/spec/allocations/2", value: b },
      { op: "replace", path: "/spec/allocations/2", value: { ...b, id: "ctr-b2" } },
    ]);
  });

  test("a pool without allocations, or without a spec, gets them whole, guarded against a concurrent first write", () => {
    const next = new Map([["1", a]]);
    expect(poolPatch({ metadata: { name: "p" }, spec: { range: "10.0.0.0/24" } }, "10.0.0.0/24", next)).toEqual([
      { op: "test", path: "/spec/allocations", value: null },
      { op: "add", path: "/spec/allocations", value: { "1": a } },
    ]);
    expect(poolPatch({ metadata: { name: "p" } }, "10.0.0.0/24", next)).toEqual([
      { op: "test", path: "/spec", value: null },
      { op: "add", path: "/spec", value: { range: "10.0.0.0/24", allocations: { "1": a } } },
    ]);
  });

  test("keys are JSON Pointer escaped", () => {
    const odd = { metadata: { name: "p" }, spec: { range: "10.0.0.0/24", allocations: { "a/b~c": a } } };
    expect(poolPatch(odd, "10.0.0.0/24", new Map())).toEqual([
      { op: "test", path: "/spec/allocations/a~1b~0c", value: a },
      { op: "remove", path: "/spec/allocations/a~1b~0c" },
    ]);
  });
});
