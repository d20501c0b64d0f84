/**
 * A container image without a registry or Docker: a one-layer OCI image archive that
 * `ctr images import` takes (/work/shared/recipes/kubelet-containerd.md, "An OCI image without a
 * registry or Docker"). The test machine reaches no registry, so the sandbox ("pause") image and
 * any test container image are made here.
 *
 * Runs under Node (vitest): node: modules, and the machine's tar and gzip.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

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

/** An OCI image layout of one layer, packed in a tar: the archive's path. */
function ociArchive(dir: string, image: { name: string; rootfs: string; entrypoint: string[] }): string {
  const layout = join(dir, "layout");
  const blobs = join(layout, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const blob = (bytes: Buffer): { digest: string; size: number } => {
    const hex = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };

  // Reproducible: owner 0, a fixed mtime, sorted names, gzip without a name or time.
  const layerTar = join(dir, "layer.tar");
  run("tar", ["--create", "--file", layerTar, "--directory", image.rootfs, "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--sort=name", "."]);
  const uncompressed = readFileSync(layerTar);
  const gzip = spawnSync("gzip", ["-n", "-c", layerTar], { maxBuffer: 1 << 30 });
  if (gzip.status !== 0) throw new Error(`gzip: ${gzip.stderr}`);
  const layer = blob(gzip.stdout);

  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Entrypoint: image.entrypoint },
        rootfs: { type: "layers", diff_ids: [`sha256:${createHash("sha256").update(uncompressed).digest("hex")}`] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
      }),
    ),
  );
  const tag = image.name.slice(image.name.lastIndexOf(":") + 1);
  writeFileSync(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...manifest,
          // containerd names the imported image after the first; the second is the OCI tag.
          annotations: { "io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": tag },
        },
      ],
    }),
  );
  writeFileSync(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const archive = join(dir, "image.tar");
  run("tar", ["--create", "--file", archive, "--directory", layout, "oci-layout", "index.json", "blobs"]);
  return archive;
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${result.stderr}${result.error ?? ""}`);
}
