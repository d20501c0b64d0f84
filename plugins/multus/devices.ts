/**
 * The devices kubelet assigned to a pod, for NADs that name a device-plugin resource
 * (`k8s.v1.cni.cncf.io/resourceName`), from kubelet's pod-resources socket as upstream's
 * `pkg/kubeletclient` reads them (shared/kube/podresources.ts). Without the socket, such a NAD
 * fails with an error saying so: a delegate must never run without the device it was promised.
 */
import { CniError, ErrorCode } from "../../shared/cni/errors.ts";
import { POD_RESOURCES_SOCKET, PodResourcesSocketAbsentError, PodResourcesUnavailableError, podDeviceIds } from "../../shared/kube/podresources.ts";
import { messageOf } from "../../shared/errors.ts";
import type { DeviceSource } from "./networks.ts";

/** upstream's kubelet client waits 10 s for the connection and 10 s for the answer. */
const POD_RESOURCES_TIME_MS = 20_000;

export function kubeletDevices(socket = POD_RESOURCES_SOCKET): DeviceSource {
  return {
    async devices(namespace, name) {
      try {
        return await podDeviceIds({ socket, deadline: Date.now() + POD_RESOURCES_TIME_MS }, namespace, name);
      } catch (err) {
        const what = `cannot read the devices kubelet assigned to pod ${namespace}/${name}`;
        if (err instanceof PodResourcesSocketAbsentError) {
          throw new CniError(ErrorCode.InvalidConfig, `${what}: kubelet's pod-resources socket ${socket} does not exist (is this a kubelet node?)`);
        }
        if (err instanceof PodResourcesUnavailableError) throw new CniError(ErrorCode.TryAgainLater, `${what}: ${messageOf(err)}`);
        throw new CniError(ErrorCode.Internal, `${what}: ${messageOf(err)}`);
      }
    },
  };
}
