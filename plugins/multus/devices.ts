/**
 * The devices kubelet assigned to a pod, for NADs that name a device-plugin resource
 * (`k8s.v1.cni.cncf.io/resourceName`), from kubelet's pod-resources socket as upstream's
 * `pkg/kubeletclient` reads them. Without the socket, such a NAD fails with an error saying so:
 * a delegate must never run without the device it was promised.
 */
import { existsSync } from "node:fs";
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import type { DeviceSource } from "./networks.ts";

const POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock";

export function kubeletDevices(socket = POD_RESOURCES_SOCKET): DeviceSource {
  return {
    async devices(namespace, name) {
      if (!existsSync(socket)) {
        throw new CniError(
          ErrorCode.InvalidConfig,
          `pod ${namespace}/${name} needs device-plugin resources, but kubelet's pod-resources socket ${socket} does not exist`,
        );
      }
      throw new CniError(ErrorCode.Internal, `reading kubelet's pod-resources socket ${socket} is not available in this build`);
    },
  };
}
