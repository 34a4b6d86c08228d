/**
 * The training progress display: on a terminal, one line rewritten in place (`\r`) after every
 * step; otherwise (a file, a pipe, CI) or when quiet, a plain line every few steps, so logs stay
 * short and readable.
 *
 * @module
 */

/** What a step reports to the progress display. */
export interface ProgressUpdate {
  /** Steps done so far. */
  step: number;
  /** Latest training loss per model. */
  losses: Record<string, number>;
  /** Recent training speed. */
  stepsPerSecond: number;
  /** Recent training-data tokens per second: each batch counted once, though every model trains on it. */
  tokensPerSecond: number;
}

/** Options of {@linkcode createProgress}. */
export interface ProgressOptions {
  /** Total steps of the run, for the count and the ETA. */
  total: number;
  /** Plain lines only, even on a terminal. */
  quiet?: boolean;
  /** Whether output goes to a terminal; default `Deno.stdout.isTerminal()`. */
  isTerminal?: boolean;
  /** Steps between plain lines (default: a twentieth of the total, at least 1). */
  every?: number;
  /** Where text goes; default standard output. */
  write?: (text: string) => void;
  /** Terminal width to truncate the live line to; default the console's, else 120. */
  columns?: number;
}

/** A progress display; see {@linkcode createProgress}. */
export interface Progress {
  /** Reports a finished step. */
  update(update: ProgressUpdate): void;
  /** Ends the display: closes the live line, or prints the last step if it was not printed. */
  finish(): void;
}

/** Seconds as `1h02m03s`, `4m05s` or `6s`; `?` when unknown. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (v: number) => String(v).padStart(2, "0");
  return h ? `${h}h${two(m)}m${two(r)}s` : m ? `${m}m${two(r)}s` : `${r}s`;
}

function formatLoss(loss: number): string {
  return Number.isFinite(loss) ? loss.toFixed(4) : String(loss);
}

/**
 * The progress line of a step: `step 120/1000  loss bert 0.6931 gpt2 0.7012  3.20 steps/s
 * 4100 tok/s  ETA 4m35s`.
 */
export function progressLine(update: ProgressUpdate, total: number): string {
  const losses = Object.entries(update.losses).map(([model, loss]) => `${model} ${formatLoss(loss)}`).join(
    " ",
  );
  const eta = update.stepsPerSecond > 0 ? (total - update.step) / update.stepsPerSecond : NaN;
  return [
    `step ${update.step}/${total}`,
    `loss ${losses}`,
    `${update.stepsPerSecond.toFixed(2)} steps/s`,
    `${Math.round(update.tokensPerSecond)} tok/s`,
    `ETA ${formatEta(eta)}`,
  ].join("  ");
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 120;
  }
}

/**
 * A progress display for a run of `total` steps. On a terminal (and not quiet) every update
 * rewrites one line in place; otherwise a plain line is written every `every` steps and at the last
 * step.
 */
export function createProgress(options: ProgressOptions): Progress {
  const encoder = new TextEncoder();
  const write = options.write ?? ((text: string) => {
    const bytes = encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += Deno.stdout.writeSync(bytes.subarray(done));
  });
  const live = !options.quiet && (options.isTerminal ?? Deno.stdout.isTerminal());
  const every = Math.max(1, Math.round(options.every ?? options.total / 20));
  const columns = options.columns ?? (live ? consoleColumns() : Infinity);
  let last: ProgressUpdate | null = null;
  let printed = false;
  let open = false;
  return {
    update(update: ProgressUpdate): void {
      last = update;
      const line = progressLine(update, options.total);
      if (live) {
        // Clear to the end of the line so a shorter line leaves nothing behind; never wrap.
        write(`\r${line.length >= columns ? line.slice(0, Math.max(0, columns - 1)) : line}\x1b[K`);
        open = true;
      } else if (update.step % every === 0 || update.step >= options.total) {
        write(`${line}\n`);
        printed = true;
      } else {
        printed = false;
      }
    },
    finish(): void {
      if (open) write("\n");
      else if (last && !printed) write(`${progressLine(last, options.total)}\n`);
      open = false;
      printed = true;
    },
  };
}
