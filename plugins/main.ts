/**
 * The one executable behind every plugin name: bin/macvlan, bin/ipvlan, ... are hard links to it,
 * and it runs the plugin it was invoked as.
 */
import { basename } from "node:path";
import { runPlugin } from "../shared/cni/skel.ts";
import { PLUGINS } from "./index.ts";

const invokedAs = basename(process.argv0);
const plugin = PLUGINS[invokedAs];
if (!plugin) {
  process.stderr.write(`this executable is a CNI plugin; invoke it as one of: ${Object.keys(PLUGINS).join(", ")}\n`);
  process.exit(1);
}
// Bytecode builds are CommonJS, which has no top-level await.
void runPlugin(plugin).then((code) => {
  process.exitCode = code;
});
