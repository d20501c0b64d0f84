/**
 * A container image without a registry or Docker: a one-layer OCI image archive that
 * `ctr images import` takes (/work/shared/recipes/kubelet-containerd.md, "An OCI image without a
 * registry or Docker"). Shared by the product's image (scripts/image.ts) and the test nodes'
 * sandbox image (conformance/node/image.ts).
 *
 * Reproducible: the same rootfs gives the same bytes (owner 0, a fixed mtime, sorted names, gzip
 * without a name or time, JSON written in one key order), so the image's digest names its content.
 *
 * Runs under Node (vitest) and Bun (npm run image): node: modules, and the machine's tar and gzip.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface OciImage {
  /** The name containerd gives the image at import (`io.containerd.image.name`), with its tag. */
  name: string;
  /** A directory whose tree is the image's one layer. */
  rootfs: string;
  entrypoint: string[];
}

/**
 * An OCI image layout of one layer, packed in a tar: the archive's path (`archive`, default
 * `<dir>/image.tar`). `dir` holds the layout while it is made (`<dir>/layout`, replaced).
 */
export function ociArchive(dir: string, image: OciImage, archive = join(dir, "image.tar")): string {
  const layout = join(dir, "layout");
  rmSync(layout, { recursive: true, force: true });
  const blobs = join(layout, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const blob = (bytes: Buffer): { digest: string; size: number } => {
    const hex = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };

  const layerTar = join(dir, "layer.tar");
  run("tar", ["--create", "--file", layerTar, "--directory", image.rootfs, ...REPRODUCIBLE, "."]);
  const uncompressed = readFileSync(layerTar);
  const gzip = spawnSync("gzip", ["-n", "-c", layerTar], { maxBuffer: 1 << 30 });
  if (gzip.status !== 0) throw new Error(`gzip: ${gzip.stderr}${gzip.error ?? ""}`);
  rmSync(layerTar);
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
  run("tar", ["--create", "--file", archive, "--directory", layout, ...REPRODUCIBLE, "oci-layout", "index.json", "blobs"]);
  rmSync(layout, { recursive: true, force: true });
  return archive;
}

/** tar's options that make an archive depend on the files' names, contents and modes only. */
const REPRODUCIBLE = ["--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--sort=name", "--format=gnu"];

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${result.stderr}${result.error ?? ""}`);
}
