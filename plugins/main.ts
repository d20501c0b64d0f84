/**
 * The one executable behind every plugin name: bin/macvlan, bin/ipvlan, ... are hard links to it,
 * and it runs the plugin it was invoked as.
 */
import { basename } from "node:path";
import { CniError, ErrorCode } from "../shared/cni/errors.ts";
import { carryPlugins } from "../shared/cni/exec.ts";
import { runPlugin } from "../shared/cni/skel.ts";
import { LATEST } from "../shared/cni/version.ts";
import { writeAllSync } from "../shared/log.ts";
import { PLUGINS } from "./index.ts";

const invokedAs = basename(process.argv0);
const load = PLUGINS[invokedAs];
// `cni-plugins install ...` (argv: "bun", the bundled script, then the arguments): the node
// installer, imported only here so that no plugin start evaluates it (docs/installer.md).
if (!load && invokedAs === "cni-plugins" && process.argv[2] === "install") {
  void import("./installer/main.ts").then(({ install }) => install(process.argv.slice(3), Object.keys(PLUGINS))).then((code) => process.exit(code));
} else if (!load) {
  // A runtime reads stdout: give it an error object too, not only words on stderr.
  const known = Object.keys(PLUGINS).join(", ");
  const error = new CniError(ErrorCode.InvalidConfig, `this executable is invoked as "${invokedAs}", which is no plugin it carries`, `known: ${known}`);
  // Written synchronously: process.exit does not wait for stream writes.
  writeAllSync(1, JSON.stringify(error.toJSON(LATEST), null, 4));
  writeAllSync(2, `this executable is a CNI plugin; invoke it as one of: ${known}\n`);
  process.exit(1);
} else {
  // Bytecode builds are CommonJS, which has no top-level await. The answer is written (synchronously)
  // when runPlugin returns: exit then, so that nothing left pending (a connection attempt to an
  // API server that drops packets) holds the runtime waiting for this process.
  // A delegate that is this executable under another plugin's name runs in this process
  // (exec.ts); multus is not carried: a multus delegate (a misconfiguration) stays a process of its own.
  const { multus: _meta, ...leaves } = PLUGINS;
  carryPlugins(leaves);
  void load()
    .then(runPlugin)
    .then((code) => process.exit(code));
}
