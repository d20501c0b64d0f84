/**
 * Device-info files (the Network Plumbing WG's device-info spec, network-attachment-definition-
 * client v1.7.6 `pkg/utils/net-attach-def.go`): a device plugin leaves one per device under
 * `devinfo/dp/`; multus copies it to the path a delegate is told (`CNIDeviceInfoFile`), reads it
 * back into the network-status `device-info`, and removes it on DEL.
 */
import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { isJsonObject } from "../../shared/cni/json.ts";
import type { JsonObject } from "../../shared/cni/types.ts";
import { messageOf } from "../../shared/errors.ts";
import { CNI_DEVICE_INFO_DIR, type PodDelegate, deviceInfoFile } from "./delegates.ts";

const DP_DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp";

/** `<dp dir>/<resource with / as ->-<device>-device.json`. */
function devicePluginFile(resourceName: string, deviceID: string): string {
  return `${DP_DEVICE_INFO_DIR}/${`${resourceName}-${deviceID}-device.json`.replaceAll("/", "-")}`;
}

/**
 * Copies the device plugin's file for the delegate's device, if there is one. Returns why it
 * could not, for the log: a missing file is normal (not every device plugin writes one).
 */
export function copyDeviceInfo(delegate: PodDelegate, containerId: string): string | undefined {
  if (!delegate.resourceName || !delegate.deviceID) return undefined;
  const target = deviceInfoFile(delegate.conf.name, containerId, delegate.ifName);
  try {
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    copyFileSync(devicePluginFile(delegate.resourceName, delegate.deviceID), target);
    return undefined;
  } catch (err) {
    return messageOf(err);
  }
}

/** The delegate's device-info object, if its file exists and holds one. */
export function readDeviceInfo(delegate: PodDelegate, containerId: string): JsonObject | undefined {
  if (!delegate.deviceID) return undefined;
  try {
    const value: unknown = JSON.parse(readFileSync(deviceInfoFile(delegate.conf.name, containerId, delegate.ifName), "utf8"));
    return isJsonObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Removes the delegate's device-info file (DEL). */
export function removeDeviceInfo(delegate: PodDelegate, containerId: string): void {
  if (!delegate.deviceID) return;
  const file = deviceInfoFile(delegate.conf.name, containerId, delegate.ifName);
  if (file.startsWith(`${CNI_DEVICE_INFO_DIR}/`)) rmSync(file, { force: true });
}
