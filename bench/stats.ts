/** The statistics the benchmarks print. */

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The p-th percentile (nearest rank) of an ascending list. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** Rows of cells as aligned lines, indented by two: the first column left-aligned, the others right. */
export function tableLines(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((cells) => cells[c]?.length ?? 0)));
  return [header, ...rows].map(
    (cells) =>
      `  ${(cells[0] ?? "").padEnd(widths[0] ?? 0)}  ${cells
        .slice(1)
        .map((cell, c) => cell.padStart(widths[c + 1] ?? 0))
        .join("  ")}`,
  );
}
