/**
 * The messages between the host (guest.ts) and the guest agent (agent.ts): one JSON object per
 * line each way over a virtio-serial port. JSON.stringify never emits a raw newline, so a line is
 * always one whole message; byte streams (stdin, stdout, stderr) travel as base64 so that any
 * output, binary or not, comes back exactly as the command wrote it.
 */

/** Host → guest: run one command, or end the agent (the guest's /init then powers off). */
export type Request =
  | {
      id: number;
      op: "run";
      argv: string[];
      /** The command's whole environment, as the harness gave it; null: the agent's clean default. */
      env: Record<string, string> | null;
      /** stdin, base64. */
      input: string;
      /** The host's working directory, used when it exists in the guest too. */
      cwd: string;
    }
  | { id: number; op: "poweroff" };

/** Guest → host. `id` 0 is the agent announcing itself once it is ready. */
export type Reply =
  | { id: 0; ready: true; kernel: string }
  | { id: number; status: number; stdout: string; stderr: string }
  | { id: number; error: string }
  | { id: number; ok: true };

/** The virtio-serial port's name; the guest's /init finds the device by it. */
export const AGENT_PORT_NAME = "org.cni-plugins.agent";
