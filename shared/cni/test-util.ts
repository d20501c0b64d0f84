/** Helpers for the unit tests of shared/cni. */
import { CniError } from "./errors.ts";

export interface ThrownError {
  code: number;
  msg: string;
  details: string;
}

/** The CniError `fn` throws, as plain data so one assertion checks code, message and details. */
export function thrown(fn: () => unknown): ThrownError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CniError) return { code: err.code, msg: err.message, details: err.details };
    throw err;
  }
  throw new Error("expected a CniError, but nothing was thrown");
}

/** The CniError the promise `fn` returns rejects with, as plain data (thrown's async twin). */
export async function rejected(fn: () => Promise<unknown>): Promise<ThrownError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof CniError) return { code: err.code, msg: err.message, details: err.details };
    throw err;
  }
  throw new Error("expected a CniError, but nothing was thrown");
}
