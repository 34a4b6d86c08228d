/**
 * A dependency-free grouped bar chart with interval whiskers, for the ablations of
 * `docs/RESULTS.md`: one group of bars per variant, one bar per model, a zero line, nice ticks and a
 * legend. Same look and the same standalone-SVG rules as the line charts of `train/plot.ts`.
 *
 * @module
 */
import { escapeXml, formatTick, niceTicks, PALETTE } from "../train/plot.ts";

/** One bar per group, such as one model's effect in each ablation. */
export interface BarSeries {
  /** Legend text. */
  name: string;
  /** The bar heights, one per group; a non-finite value draws no bar (a dash marks the gap). */
  values: readonly number[];
  /** Lower whisker ends, one per group (non-finite: no whisker). */
  low?: readonly number[];
  /** Upper whisker ends, one per group (non-finite: no whisker). */
  high?: readonly number[];
  /** Fill colour (CSS); default: the palette colour of the series' position. */
  color?: string;
}

/** Everything {@linkcode barChart} draws. */
export interface BarChartOptions {
  /** Title above the plot. */
  title: string;
  /** Y axis label. */
  yLabel?: string;
  /** Group labels along the x axis, in order. */
  groups: readonly string[];
  /** The bars of each group. */
  series: readonly BarSeries[];
  /** Width in pixels (default 720). */
  width?: number;
  /** Height in pixels (default 400). */
  height?: number;
}

const r2 = (v: number) => Math.round(v * 100) / 100;

/** A standalone SVG grouped bar chart with whiskers; see {@linkcode BarChartOptions}. */
export function barChart(options: BarChartOptions): string {
  const width = options.width ?? 720;
  const height = options.height ?? 400;
  const plot = { left: 64, right: width - 196, top: 40, bottom: height - 96 };
  const groups = options.groups;
  for (const s of options.series) {
    for (const [what, values] of [["values", s.values], ["low", s.low], ["high", s.high]] as const) {
      if (values && values.length !== groups.length) {
        throw new Error(
          `barChart "${options.title}": series "${s.name}" has ${values.length} ${what} for ${groups.length} groups`,
        );
      }
    }
  }
  const all = [0];
  for (const s of options.series) {
    all.push(...s.values, ...(s.low ?? []), ...(s.high ?? []));
  }
  const finite = all.filter(Number.isFinite);
  const ticks = niceTicks(Math.min(...finite), Math.max(...finite));
  const [low, high] = [ticks[0], ticks.at(-1)!];
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  const toY = (v: number) => plot.bottom - ((v - low) / (high - low)) * (plot.bottom - plot.top);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escapeXml(options.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600" fill="#222222">${
      escapeXml(options.title)
    }</text>`,
  ];
  const grid: string[] = [];
  for (const t of ticks) {
    const y = r2(toY(t));
    grid.push(`<line x1="${plot.left}" y1="${y}" x2="${plot.right}" y2="${y}" stroke="#e6e6e6"/>`);
    grid.push(
      `<text x="${plot.left - 6}" y="${y + 4}" text-anchor="end" fill="#444444">${
        escapeXml(formatTick(t, step))
      }</text>`,
    );
  }
  out.push(`<g>${grid.join("")}</g>`);
  out.push(
    `<rect x="${plot.left}" y="${plot.top}" width="${plot.right - plot.left}" height="${
      plot.bottom - plot.top
    }" fill="none" stroke="#999999"/>`,
  );
  const zero = r2(toY(0));
  out.push(`<line x1="${plot.left}" y1="${zero}" x2="${plot.right}" y2="${zero}" stroke="#555555"/>`);
  if (options.yLabel) {
    const cy = (plot.top + plot.bottom) / 2;
    out.push(
      `<text x="16" y="${cy}" text-anchor="middle" transform="rotate(-90 16 ${cy})" fill="#222222">${
        escapeXml(options.yLabel)
      }</text>`,
    );
  }
  if (groups.length === 0 || options.series.length === 0) {
    out.push(
      `<text x="${(plot.left + plot.right) / 2}" y="${
        (plot.top + plot.bottom) / 2
      }" text-anchor="middle" fill="#888888">no data</text>`,
    );
  }

  const groupWidth = (plot.right - plot.left) / Math.max(1, groups.length);
  const barWidth = (groupWidth * 0.8) / Math.max(1, options.series.length);
  groups.forEach((name, g) => {
    const centre = plot.left + (g + 0.5) * groupWidth;
    const label = name.length > 24 ? `${name.slice(0, 23)}…` : name;
    out.push(
      `<text x="${r2(centre)}" y="${plot.bottom + 14}" text-anchor="end" transform="rotate(-30 ${
        r2(centre)
      } ${plot.bottom + 14})" fill="#444444">${escapeXml(label)}</text>`,
    );
    options.series.forEach((s, k) => {
      const color = escapeXml(s.color ?? PALETTE[k % PALETTE.length]);
      const x = plot.left + g * groupWidth + groupWidth * 0.1 + k * barWidth;
      const value = s.values[g];
      if (!Number.isFinite(value)) {
        out.push(
          `<text x="${r2(x + barWidth / 2)}" y="${zero - 3}" text-anchor="middle" fill="#888888">–</text>`,
        );
        return;
      }
      const top = Math.min(toY(value), zero);
      out.push(
        `<rect x="${r2(x + 1)}" y="${r2(top)}" width="${r2(Math.max(1, barWidth - 2))}" height="${
          r2(Math.abs(toY(value) - zero))
        }" fill="${color}" fill-opacity="0.85"/>`,
      );
      const [lo, hi] = [s.low?.[g], s.high?.[g]];
      if (lo !== undefined && hi !== undefined && Number.isFinite(lo) && Number.isFinite(hi)) {
        const cx = r2(x + barWidth / 2);
        const [y1, y2] = [r2(toY(lo)), r2(toY(hi))];
        const cap = r2(Math.min(6, barWidth / 4));
        out.push(
          `<path d="M${cx} ${y1}V${y2}M${r2(cx - cap)} ${y1}h${2 * cap}M${r2(cx - cap)} ${y2}h${
            2 * cap
          }" stroke="#222222" stroke-width="1.25"/>`,
        );
      }
    });
  });

  options.series.forEach((s, k) => {
    const y = plot.top + 8 + k * 18;
    const x = plot.right + 14;
    const color = escapeXml(s.color ?? PALETTE[k % PALETTE.length]);
    const name = s.name.length > 22 ? `${s.name.slice(0, 21)}…` : s.name;
    out.push(
      `<rect x="${x}" y="${y - 5}" width="20" height="10" fill="${color}" fill-opacity="0.85"/>`,
      `<text x="${x + 26}" y="${y + 4}" fill="#222222">${escapeXml(name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
