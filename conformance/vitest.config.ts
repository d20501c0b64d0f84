import { defineConfig } from "vitest/config";

// The conformance suite drives compiled binaries against the real kernel: one file at a time, so
// that namespace-heavy suites do not compete for the two cores, with room for slow kernels.
export default defineConfig({
  test: {
    include: ["conformance/**/*.test.ts"],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
