/** Every plugin the executable carries, by the name it is invoked as. */
import type { PluginVerbs } from "../shared/cni/skel.ts";
import { ipvlan } from "./ipvlan/main.ts";
import { macvlan } from "./macvlan/main.ts";
import { sbr } from "./sbr/main.ts";
import { whereabouts } from "./whereabouts/main.ts";

export const PLUGINS: Record<string, PluginVerbs> = { macvlan, ipvlan, sbr, whereabouts };
