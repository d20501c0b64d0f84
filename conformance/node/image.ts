/**
 * The test nodes' sandbox ("pause") image, made here as a one-layer OCI image archive
 * (scripts/oci.ts, shared with the product's image) that `ctr images import` takes: the test
 * machine reaches no registry.
 *
 * Runs under Node (vitest): node: modules, and the machine's tar and gzip.
 */
import { chmodSync, copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { ociArchive } from "../../scripts/oci.ts";

/** The sandbox image's name, which containerd's sandbox_image and test pods use. */
export const PAUSE_IMAGE = "cnit.local/pause:1";

/**
 * The pause image: Debian's static busybox as /busybox (busybox picks its applet by its own
 * name, so it keeps it), its shell as PID 1 waiting on a sleeping child. The shell reaps the children of the pod's namespace and exits on SIGTERM (a PID 1 has no
 * default signal handlers, so the trap is what ends it); containerd stops sandboxes with SIGKILL
 * anyway.
 */
export function pauseImageArchive(dir: string): string {
  const rootfs = join(dir, "rootfs");
  mkdirSync(rootfs, { recursive: true });
  copyFileSync("/bin/busybox", join(rootfs, "busybox"));
  chmodSync(join(rootfs, "busybox"), 0o755);
  return ociArchive(dir, {
    name: PAUSE_IMAGE,
    rootfs,
    entrypoint: ["/busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do /busybox sleep 3600 & wait $!; done"],
  });
}
