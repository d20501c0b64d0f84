/**
 * Policy routing rules over netlink: "from <prefix> lookup <table>" rules, added, deleted and
 * listed per family (what sbr needs).
 */
import * as rt from "netlink/dist/rt/structs";
import { type Family, type Prefix, bitsOf, ipFromBytes, ipToBytes } from "../ip.ts";
import { afOf, asBuffer, encode, enumNumber, familyOfAf } from "./message.ts";
import { type Netlink, NLM_F_CREATE, NLM_F_EXCL } from "./socket.ts";

export interface RuleSpec {
  family: Family;
  table: number;
  src?: Prefix;
  dst?: Prefix;
  priority?: number;
}

export interface Rule extends RuleSpec {
  action: number;
}

const FR_ACT_TO_TBL = 1;

export function ruleAdd(nl: Netlink, rule: RuleSpec): void {
  nl.execute(rt.MessageType.NEWRULE, NLM_F_CREATE | NLM_F_EXCL, encodeRule(rule));
}

export function ruleDel(nl: Netlink, rule: RuleSpec): void {
  nl.execute(rt.MessageType.DELRULE, 0, encodeRule(rule));
}

/** Rules of one family, or of both. */
export function ruleList(nl: Netlink, family?: Family): Rule[] {
  const families = family ? [family] : ([4, 6] as const);
  return families.flatMap((f) => nl.dump(rt.MessageType.GETRULE, ruleMessage({ family: afOf(f) }, {})).map(decodeRule));
}

function ruleMessage(data: rt.Rule, attrs: rt.RuleAttrs): Uint8Array[] {
  return [encode((out) => rt.formatRuleMessage({ kind: "rule", data, attrs }, out))];
}

function encodeRule(rule: RuleSpec): Uint8Array[] {
  const header: rt.Rule = {
    family: afOf(rule.family),
    table: rule.table < 256 ? rule.table : 0,
    action: FR_ACT_TO_TBL,
  };
  const attrs: rt.RuleAttrs = { table: rule.table };
  if (rule.src) {
    header.srcLen = rule.src.length;
    attrs.src = ipToBytes(rule.src.ip);
  }
  if (rule.dst) {
    header.dstLen = rule.dst.length;
    attrs.dst = ipToBytes(rule.dst.ip);
  }
  if (rule.priority !== undefined) attrs.priority = rule.priority;
  return ruleMessage(header, attrs);
}

function decodeRule(payload: Uint8Array): Rule {
  const { data, attrs } = rt.parseRuleMessage(asBuffer(payload));
  const family = familyOfAf(data.family);
  const rule: Rule = {
    family,
    table: attrs.table ?? data.table ?? 0,
    action: enumNumber(rt.RuleAction, data.action),
  };
  if (attrs.src) rule.src = { ip: ipFromBytes(attrs.src), length: data.srcLen ?? bitsOf(family), family };
  if (attrs.dst) rule.dst = { ip: ipFromBytes(attrs.dst), length: data.dstLen ?? bitsOf(family), family };
  if (attrs.priority !== undefined) rule.priority = attrs.priority;
  return rule;
}
