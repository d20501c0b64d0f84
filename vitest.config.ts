import { defineConfig } from "vitest/config";

// Unit tests cover pure logic only; the conformance suite (conformance/) runs compiled binaries.
export default defineConfig({
  test: {
    include: ["shared/**/*.test.ts", "plugins/**/*.test.ts"],
  },
});
