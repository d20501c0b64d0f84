/**
 * The undo log of a verb that changes the kernel step by step (sbr's rules and routes, a child
 * link and its IPAM lease): when a later step fails, what the earlier ones did is taken back, so
 * that a failed ADD leaves nothing behind and the runtime need not call DEL for it.
 */
import { messageOf } from "../errors.ts";
import type { Logger } from "../log.ts";

/** What ADD changed so far, to take back in reverse order when a later step fails. */
export class UndoLog {
  private readonly steps: (() => void)[] = [];

  constructor(private readonly log: Logger) {}

  push(step: () => void): void {
    this.steps.push(step);
  }

  /** Best effort: the ADD's own error is what the runtime must see. */
  run(): void {
    for (const step of this.steps.reverse()) {
      try {
        step();
      } catch (err) {
        this.log.error(`undoing a half-done ADD: ${messageOf(err)}`);
      }
    }
  }
}

/** Runs `work`; if it throws, the steps it pushed are undone, newest first, and the error rethrown. */
export function withUndo<T>(log: Logger, work: (undo: UndoLog) => T): T {
  const undo = new UndoLog(log);
  try {
    return work(undo);
  } catch (err) {
    undo.run();
    throw err;
  }
}
