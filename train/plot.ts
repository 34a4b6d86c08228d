/**
 * A small dependency-free line chart writer for the training report: line series with gaps at
 * NaN/Infinity, shaded bands (such as an interval over seeds), dashed horizontal reference lines, event marks along the x axis, nice ticks, a
 * legend, a title and an optional log-scale y axis. The result is a standalone SVG document with
 * width, height and viewBox, which Markdown viewers such as GitHub render from `![](chart.svg)`.
 *
 * @module
 */

/** A line of (x, y) points; a point whose x or y is not finite (or y <= 0 on a log axis) is a gap. */
export interface Series {
  /** Legend text. */
  name: string;
  /** X values, in drawing order. */
  x: ArrayLike<number>;
  /** Y values, one per x. */
  y: ArrayLike<number>;
  /** Stroke colour (CSS); default: the palette colour of the series' position. */
  color?: string;
  /** Stroke opacity, 0-1 (default 1). */
  opacity?: number;
  /** Stroke width in pixels (default 1.75). */
  width?: number;
  /** Draw dashed (default false). */
  dashed?: boolean;
  /** List in the legend (default true). */
  legend?: boolean;
}

/**
 * A shaded area between two curves over the same x, such as a confidence band over seeds; drawn
 * beneath the lines. A point whose x, low or high is not finite (or not positive on a log axis) is a gap.
 */
export interface Band {
  /** Legend text. */
  name: string;
  /** X values, in drawing order. */
  x: ArrayLike<number>;
  /** Lower edge, one per x. */
  low: ArrayLike<number>;
  /** Upper edge, one per x. */
  high: ArrayLike<number>;
  /** Fill colour (CSS); default: the palette colour of the band's position. */
  color?: string;
  /** Fill opacity, 0-1 (default 0.18). */
  opacity?: number;
  /** List in the legend (default false: a band usually belongs to a line that is listed). */
  legend?: boolean;
}

/** A horizontal reference line across the whole plot, such as a baseline's score. */
export interface ReferenceLine {
  /** Legend text. */
  name: string;
  /** Its y value. */
  y: number;
  /** Stroke colour (default dark grey). */
  color?: string;
  /** Draw dashed (default true). */
  dashed?: boolean;
}

/** Events drawn as short ticks along the bottom of the plot, such as skipped updates. */
export interface Marks {
  /** Legend text. */
  name: string;
  /** The x of each event. */
  x: ArrayLike<number>;
  /** Colour (default: the palette colour of the marks' position). */
  color?: string;
}

/** Everything {@linkcode lineChart} draws. */
export interface ChartOptions {
  /** Title above the plot. */
  title: string;
  /** X axis label. */
  xLabel?: string;
  /** Y axis label. */
  yLabel?: string;
  /** The lines. */
  series: Series[];
  /** Shaded bands beneath the lines. */
  bands?: Band[];
  /** Horizontal reference lines. */
  lines?: ReferenceLine[];
  /** Event marks. */
  marks?: Marks[];
  /** Log-scale y axis (base 10). */
  logY?: boolean;
  /** Width in pixels (default 720). */
  width?: number;
  /** Height in pixels (default 360). */
  height?: number;
}

/** Tableau 10, the default colours in order. */
export const PALETTE: readonly string[] = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];

/** Characters XML 1.0 forbids: C0 controls but tab, newline and return; U+FFFE/FFFF; lone surrogates. */
const NOT_XML =
  // deno-lint-ignore no-control-regex -- matching the forbidden control characters is the point.
  /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Text made safe for XML content and attribute values: `& < > " '` escaped, and characters XML 1.0
 * forbids (control characters, lone surrogates, U+FFFE/FFFF) replaced by U+FFFD.
 */
export function escapeXml(text: string): string {
  return text
    .replace(NOT_XML, "\ufffd")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** 1, 2, 5 or 10 times a power of ten near `x`: the nearest when `round`, else the next above. */
function niceNumber(x: number, round: boolean): number {
  const power = 10 ** Math.floor(Math.log10(x));
  const f = x / power;
  if (round) return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

/** Decimal places that show every multiple of `step` exactly. */
function decimalsOf(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

/**
 * About five evenly spaced round ticks (steps of 1, 2 or 5 times a power of ten) whose first and
 * last enclose [min, max] (Heckbert's "nice numbers"). An empty range is widened around its value.
 */
export function niceTicks(min: number, max: number): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new Error(`niceTicks: range [${min}, ${max}]`);
  if (!(max > min)) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    [min, max] = [min - pad, max + pad];
  }
  const step = niceNumber(niceNumber(max - min, false) / 4, true); // four intervals between five ticks
  const first = Math.floor(min / step);
  const last = Math.ceil(max / step);
  const decimals = decimalsOf(step);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toFixed(Math.min(decimals, 100))) || 0);
  return ticks;
}

/**
 * Ticks of a base-10 log axis enclosing [min, max] (both > 0): whole decades, with 2 and 5 between
 * them when the range spans at most two decades, and every k-th decade when it spans more than eight.
 */
export function logTicks(min: number, max: number): number[] {
  if (!(min > 0) || !(max >= min) || !Number.isFinite(max)) {
    throw new Error(`logTicks: range [${min}, ${max}]`);
  }
  const low = Math.floor(Math.log10(min));
  let high = Math.ceil(Math.log10(max));
  if (high === low) high++;
  const decades = high - low;
  const ticks: number[] = [];
  const stride = Math.ceil(decades / 8);
  for (let e = low; e <= high; e += decades > 8 ? stride : 1) {
    ticks.push(Number(`1e${e}`));
    if (decades <= 2 && e < high) ticks.push(Number(`2e${e}`), Number(`5e${e}`));
  }
  if (Math.log10(ticks.at(-1)!) < high) ticks.push(Number(`1e${high}`));
  return ticks;
}

/** A tick label: fixed decimals for the step, or exponent form for very large or small values. */
export function formatTick(value: number, step: number): string {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6 || magnitude < 1e-4 || step < 1e-4) {
    return Number(value.toPrecision(6)).toExponential().replace("e+", "e");
  }
  return value.toFixed(decimalsOf(step));
}

interface Axis {
  ticks: number[];
  labels: string[];
  /** Value to pixel; NaN for a value the axis cannot show. */
  toPixel(v: number): number;
}

function linearAxis(values: number[], from: number, to: number): Axis {
  const finite = values.filter(Number.isFinite);
  const min = finite.length ? finite.reduce((a, b) => Math.min(a, b)) : 0;
  const max = finite.length ? finite.reduce((a, b) => Math.max(a, b)) : 1;
  const ticks = niceTicks(min, max);
  const [low, high] = [ticks[0], ticks.at(-1)!];
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
  return {
    ticks,
    labels: ticks.map((t) => formatTick(t, step)),
    toPixel: (v) => (Number.isFinite(v) ? from + ((v - low) / (high - low)) * (to - from) : NaN),
  };
}

function logAxis(values: number[], from: number, to: number): Axis {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  const min = positive.length ? positive.reduce((a, b) => Math.min(a, b)) : 1;
  const max = positive.length ? positive.reduce((a, b) => Math.max(a, b)) : 10;
  const ticks = logTicks(min, max);
  const [low, high] = [Math.log10(ticks[0]), Math.log10(ticks.at(-1)!)];
  return {
    ticks,
    labels: ticks.map((t) => formatTick(t, t)),
    toPixel: (
      v,
    ) => (v > 0 && Number.isFinite(v) ? from + ((Math.log10(v) - low) / (high - low)) * (to - from) : NaN),
  };
}

const r2 = (v: number) => Math.round(v * 100) / 100;

/**
 * The SVG path data of a series (`M`/`L` commands, a new `M` after each gap) and its isolated
 * points, which a path cannot show. Runs of points within one pixel column keep only their first,
 * lowest, highest and last point, so long series stay small without changing the picture.
 */
function pathOf(xs: number[], ys: number[]): { d: string; dots: [number, number][] } {
  const parts: string[] = [];
  const dots: [number, number][] = [];
  let run: [number, number][] = [];
  const flush = () => {
    if (run.length === 1) dots.push(run[0]);
    if (run.length > 1) parts.push(run.map(([x, y], i) => `${i ? "L" : "M"}${r2(x)} ${r2(y)}`).join(""));
    run = [];
  };
  let column: [number, number][] = [];
  const closeColumn = () => {
    if (column.length <= 4) run.push(...column);
    else {
      const low = column.reduce((a, b) => (b[1] < a[1] ? b : a));
      const high = column.reduce((a, b) => (b[1] > a[1] ? b : a));
      const keep = new Set([column[0], low, high, column.at(-1)!]);
      run.push(...column.filter((p) => keep.has(p)));
    }
    column = [];
  };
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) {
      closeColumn();
      flush();
      continue;
    }
    if (column.length && Math.round(column[0][0]) !== Math.round(xs[i])) closeColumn();
    column.push([xs[i], ys[i]]);
  }
  closeColumn();
  flush();
  return { d: parts.join(""), dots };
}

/**
 * The SVG path data of a band: one closed polygon per run of shown points, along the upper edge
 * forwards and the lower edge back. A single shown point between gaps draws nothing.
 */
function bandPath(
  band: Band,
  shown: (i: number) => boolean,
  toX: (v: number) => number,
  toY: (v: number) => number,
): string {
  const parts: string[] = [];
  let run: number[] = [];
  const flush = () => {
    if (run.length > 1) {
      const upper = run.map((i, k) => `${k ? "L" : "M"}${r2(toX(band.x[i]))} ${r2(toY(band.high[i]))}`);
      const lower = [...run].reverse().map((i) => `L${r2(toX(band.x[i]))} ${r2(toY(band.low[i]))}`);
      parts.push(`${upper.join("")}${lower.join("")}Z`);
    }
    run = [];
  };
  for (let i = 0; i < band.x.length; i++) {
    if (shown(i)) run.push(i);
    else flush();
  }
  flush();
  return parts.join("");
}

/** A standalone SVG line chart; see {@linkcode ChartOptions}. */
export function lineChart(options: ChartOptions): string {
  const width = options.width ?? 720;
  const height = options.height ?? 360;
  const plot = { left: 64, right: width - 196, top: 40, bottom: height - 48 };
  const lines = options.lines ?? [];
  const marks = options.marks ?? [];
  const series = options.series.map((s, i) => {
    if (s.x.length !== s.y.length) {
      throw new Error(
        `lineChart "${options.title}": series "${s.name}" has ${s.x.length} x but ${s.y.length} y values`,
      );
    }
    return { ...s, color: s.color ?? PALETTE[i % PALETTE.length] };
  });
  const bands = (options.bands ?? []).map((b, i) => {
    if (b.x.length !== b.low.length || b.x.length !== b.high.length) {
      throw new Error(
        `lineChart "${options.title}": band "${b.name}" has ${b.x.length} x, ${b.low.length} low and ` +
          `${b.high.length} high values`,
      );
    }
    return { ...b, color: b.color ?? PALETTE[i % PALETTE.length] };
  });
  const shown = (s: Series, i: number) =>
    Number.isFinite(s.x[i]) && Number.isFinite(s.y[i]) && (!options.logY || s.y[i] > 0);
  const bandShown = (b: Band, i: number) =>
    Number.isFinite(b.x[i]) && Number.isFinite(b.low[i]) && Number.isFinite(b.high[i]) &&
    (!options.logY || (b.low[i] > 0 && b.high[i] > 0));
  const xValues: number[] = [];
  const yValues: number[] = lines.map((l) => l.y);
  for (const s of series) {
    for (let i = 0; i < s.x.length; i++) {
      if (shown(s, i)) xValues.push(s.x[i]), yValues.push(s.y[i]);
    }
  }
  for (const b of bands) {
    for (let i = 0; i < b.x.length; i++) {
      if (bandShown(b, i)) xValues.push(b.x[i]), yValues.push(b.low[i], b.high[i]);
    }
  }
  for (const m of marks) xValues.push(...Array.from(m.x));
  const empty = xValues.filter(Number.isFinite).length === 0;
  const xAxis = linearAxis(xValues, plot.left, plot.right);
  const yAxis = options.logY
    ? logAxis(yValues, plot.bottom, plot.top)
    : linearAxis(yValues, plot.bottom, plot.top);

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
  xAxis.ticks.forEach((t, i) => {
    const x = r2(xAxis.toPixel(t));
    grid.push(`<line x1="${x}" y1="${plot.top}" x2="${x}" y2="${plot.bottom}" stroke="#e6e6e6"/>`);
    grid.push(
      `<text x="${x}" y="${plot.bottom + 16}" text-anchor="middle" fill="#444444">${
        escapeXml(xAxis.labels[i])
      }</text>`,
    );
  });
  yAxis.ticks.forEach((t, i) => {
    const y = r2(yAxis.toPixel(t));
    grid.push(`<line x1="${plot.left}" y1="${y}" x2="${plot.right}" y2="${y}" stroke="#e6e6e6"/>`);
    grid.push(
      `<text x="${plot.left - 6}" y="${y + 4}" text-anchor="end" fill="#444444">${
        escapeXml(yAxis.labels[i])
      }</text>`,
    );
  });
  out.push(`<g>${grid.join("")}</g>`);
  out.push(
    `<rect x="${plot.left}" y="${plot.top}" width="${plot.right - plot.left}" height="${
      plot.bottom - plot.top
    }" fill="none" stroke="#999999"/>`,
  );
  if (options.xLabel) {
    out.push(
      `<text x="${(plot.left + plot.right) / 2}" y="${height - 10}" text-anchor="middle" fill="#222222">${
        escapeXml(options.xLabel)
      }</text>`,
    );
  }
  if (options.yLabel) {
    const cy = (plot.top + plot.bottom) / 2;
    out.push(
      `<text x="16" y="${cy}" text-anchor="middle" transform="rotate(-90 16 ${cy})" fill="#222222">${
        escapeXml(options.yLabel)
      }</text>`,
    );
  }
  if (empty) {
    out.push(
      `<text x="${(plot.left + plot.right) / 2}" y="${
        (plot.top + plot.bottom) / 2
      }" text-anchor="middle" fill="#888888">no data</text>`,
    );
  }

  const legend: { name: string; color: string; dashed: boolean; tick: boolean; area?: number }[] = [];
  for (const b of bands) {
    const color = escapeXml(b.color);
    const opacity = b.opacity ?? 0.18;
    const d = bandPath(b, (i) => bandShown(b, i), xAxis.toPixel, yAxis.toPixel);
    if (d) out.push(`<path d="${d}" fill="${color}" fill-opacity="${opacity}" stroke="none"/>`);
    if (b.legend ?? false) legend.push({ name: b.name, color, dashed: false, tick: false, area: opacity });
  }
  for (const line of lines) {
    const y = yAxis.toPixel(line.y);
    const color = escapeXml(line.color ?? "#555555");
    const dash = line.dashed ?? true;
    if (Number.isFinite(y)) {
      out.push(
        `<line x1="${plot.left}" y1="${r2(y)}" x2="${plot.right}" y2="${
          r2(y)
        }" stroke="${color}" stroke-width="1.5"${dash ? ` stroke-dasharray="6 4"` : ""}/>`,
      );
    }
    legend.push({ name: line.name, color, dashed: dash, tick: false });
  }
  for (const s of series) {
    const xs: number[] = [];
    const ys: number[] = [];
    for (let i = 0; i < s.x.length; i++) {
      xs.push(shown(s, i) ? xAxis.toPixel(s.x[i]) : NaN);
      ys.push(shown(s, i) ? yAxis.toPixel(s.y[i]) : NaN);
    }
    const { d, dots } = pathOf(xs, ys);
    const color = escapeXml(s.color);
    const opacity = s.opacity ?? 1;
    const strokeWidth = s.width ?? 1.75;
    const dash = s.dashed ? ` stroke-dasharray="6 4"` : "";
    if (d) {
      out.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="${strokeWidth}" stroke-opacity="${opacity}"` +
          ` stroke-linejoin="round"${dash}/>`,
      );
    }
    for (const [x, y] of dots) {
      out.push(
        `<circle cx="${r2(x)}" cy="${r2(y)}" r="${
          strokeWidth + 1
        }" fill="${color}" fill-opacity="${opacity}"/>`,
      );
    }
    if (s.legend ?? true) legend.push({ name: s.name, color, dashed: s.dashed ?? false, tick: false });
  }
  marks.forEach((m, k) => {
    const color = escapeXml(m.color ?? PALETTE[k % PALETTE.length]);
    const ticks: string[] = [];
    for (const x of Array.from(m.x)) {
      const px = xAxis.toPixel(x);
      if (Number.isFinite(px)) ticks.push(`M${r2(px)} ${plot.bottom}v-10`);
    }
    if (ticks.length) out.push(`<path d="${ticks.join("")}" stroke="${color}" stroke-width="2"/>`);
    legend.push({ name: m.name, color, dashed: false, tick: true });
  });

  legend.forEach((entry, i) => {
    const y = plot.top + 8 + i * 18;
    const x = plot.right + 14;
    const name = entry.name.length > 22 ? `${entry.name.slice(0, 21)}…` : entry.name;
    out.push(
      entry.area !== undefined
        ? `<rect x="${x}" y="${
          y - 5
        }" width="20" height="10" fill="${entry.color}" fill-opacity="${entry.area}"/>`
        : entry.tick
        ? `<path d="M${x + 10} ${y + 5}v-10" stroke="${entry.color}" stroke-width="2"/>`
        : `<line x1="${x}" y1="${y}" x2="${x + 20}" y2="${y}" stroke="${entry.color}" stroke-width="2"${
          entry.dashed ? ` stroke-dasharray="6 4"` : ""
        }/>`,
      `<text x="${x + 26}" y="${y + 4}" fill="#222222">${escapeXml(name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
