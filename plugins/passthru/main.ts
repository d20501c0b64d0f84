/**
 * passthru, the no-op plugin multus' auxiliary chain starts with (upstream multus v4.3.0
 * `cmd/passthru-cni`): ADD answers an empty result (no interfaces, addresses or routes) so the
 * chain's real plugins get a prevResult; DEL and CHECK do nothing.
 */
import type { PluginVerbs } from "../../shared/cni/skel.ts";

export const passthru: PluginVerbs = {
  name: "passthru",
  add: (args) => ({ cniVersion: args.conf.cniVersion, interfaces: [], ips: [], routes: [] }),
  del: () => {},
  check: () => {},
};
