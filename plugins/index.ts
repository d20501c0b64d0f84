/**
 * Every plugin the executable carries, by the name it is invoked as. Each is loaded only when
 * invoked: a process runs one plugin, and evaluating the others' modules (the rtnetlink codecs
 * among them) would cost every start.
 */
import type { PluginVerbs } from "../shared/cni/skel.ts";

export const PLUGINS: Record<string, () => Promise<PluginVerbs>> = {
  macvlan: async () => (await import("./macvlan/main.ts")).macvlan,
  ipvlan: async () => (await import("./ipvlan/main.ts")).ipvlan,
  sbr: async () => (await import("./sbr/main.ts")).sbr,
  whereabouts: async () => (await import("./whereabouts/main.ts")).whereabouts,
  multus: async () => (await import("./multus/main.ts")).multus,
  passthru: async () => (await import("./passthru/main.ts")).passthru,
};
