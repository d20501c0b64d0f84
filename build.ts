/**
 * Compiles every plugin into one multi-call executable, bin/cni-plugins, and hard-links one name
 * per plugin to it: a compiled Bun executable is ~110 MB, so one file, never five copies.
 *
 *   bun build.ts            # bin/<plugin> for every plugin
 */
import { linkSync, mkdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { PLUGINS } from "./plugins/index.ts";

const root = import.meta.dir;
const binDir = join(root, "bin");
const executable = join(binDir, "cni-plugins");
const PLUGIN_NAMES = Object.keys(PLUGINS);

mkdirSync(binDir, { recursive: true });
const started = performance.now();
const build = await Bun.build({
  entrypoints: [join(root, "plugins/main.ts")],
  compile: {
    outfile: executable,
    // A plugin runs as root in whatever directory the runtime was started from: a .env or a
    // bunfig.toml there (whose `preload` runs any script) must change nothing.
    autoloadDotenv: false,
    autoloadBunfig: false,
    // A plugin's whole life is start-up: code runs a few times and exits. JavaScriptCore's
    // tier-up thresholds × 10 keep it in the interpreter instead of compiling it on JIT threads
    // (what that saves: docs/performance.md#macvlan-and-ipvlan, "Build options").
    jitPolicy: 10,
  },
  // Bytecode skips parsing at every start (docs/performance.md#macvlan-and-ipvlan); minify shrinks what is left.
  bytecode: true,
  minify: true,
  target: "bun",
  define: { "process.env.CNI_PLUGINS_VERSION": JSON.stringify(process.env.CNI_PLUGINS_VERSION ?? versionFromPackage()) },
});
if (!build.success) {
  for (const message of build.logs) console.error(message);
  process.exit(1);
}
for (const name of PLUGIN_NAMES) {
  const path = join(binDir, name);
  rmSync(path, { force: true });
  linkSync(executable, path);
}
const megabytes = (statSync(executable).size / 1e6).toFixed(1);
console.log(`built ${executable} (${megabytes} MB) in ${((performance.now() - started) / 1000).toFixed(1)} s; linked: ${PLUGIN_NAMES.join(", ")}`);

function versionFromPackage(): string {
  return (require(join(root, "package.json")) as { version: string }).version;
}
