/**
 * Hugging Face's safetensors format on the host, as bytes (reading and writing files is in
 * `safetensors_file.ts`, Deno only): an 8-byte little-endian header
 * length N, N bytes of JSON header (`{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {..}}`),
 * then the tensors' bytes, which must cover the data region without gaps or overlaps.
 *
 * Floats are loaded as `Float32Array` and integers and booleans as `Int32Array`, the two element
 * types of the engine's tensors. Every header check runs before any value is decoded, and nothing is
 * returned unless the whole file is valid.
 *
 * @module
 */
import { formatShape, sameShape, shapeSize } from "../engine/shape.ts";

/** Element types this module reads; it writes F32 and I32. */
export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** A tensor's values on the host, row-major. */
export interface HostTensor {
  /** Dimensions; `[]` for a scalar. */
  shape: number[];
  /** `shapeSize(shape)` values. */
  data: Float32Array | Int32Array;
}

/** The contents of a safetensors file. */
export interface SafetensorsContents {
  /** Tensors in the header's order. */
  tensors: Map<string, HostTensor>;
  /** The `__metadata__` strings; empty when the file has none. */
  metadata: Record<string, string>;
}

/** Tensors to write: pairs in the order to write them, or an object whose key order is used. */
export type HostTensorEntries = Iterable<readonly [string, HostTensor]> | Record<string, HostTensor>;

/** Thrown for a malformed file, a tensor set that does not match, or tensors that cannot be written. */
export class SafetensorsError extends Error {
  /** An error whose `message` names the file (and the tensor where one is involved). */
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const DTYPES = Object.keys(DTYPE_BYTES) as SafetensorsDtype[];
const METADATA_KEY = "__metadata__";
const HEADER_ALIGNMENT = 8;

/** A validated header entry; offsets are relative to the start of the data region. */
interface Entry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses a safetensors file's bytes; floats (F64/F32/F16/BF16) become Float32Array, integers and
 * BOOL become Int32Array (I64 values outside the int32 range are an error). `source` names the
 * file in errors.
 */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsContents {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = checkHeaderLength(
    bytes.length >= 8 ? view.getBigUint64(0, true) : null,
    bytes.length,
    source,
  );
  const dataStart = 8 + headerLength;
  const { entries, metadata } = parseEntries(bytes.subarray(8, dataStart), bytes.length - dataStart, source);
  const tensors = new Map<string, HostTensor>();
  for (const entry of entries) {
    tensors.set(entry.name, { shape: entry.shape, data: decode(entry, view, dataStart, source) });
  }
  return { tensors, metadata };
}

/** A tensor as a safetensors header describes it, before any value is read. */
export interface TensorHeader {
  /** Element type in the file. */
  dtype: SafetensorsDtype;
  /** Dimensions; `[]` for a scalar. */
  shape: number[];
}

/**
 * The header length a file of `fileLength` bytes declares in `prefix`, its first 8 bytes (fewer for
 * a shorter file), checked against the file's size; throws naming `source`.
 */
export function headerLength(prefix: Uint8Array, fileLength: number, source: string): number {
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  return checkHeaderLength(prefix.length >= 8 ? view.getBigUint64(0, true) : null, fileLength, source);
}

/**
 * A safetensors header's tensors and metadata, with the checks of {@linkcode parseSafetensors} that
 * need no values (entries, offsets against a data region of `dataLength` bytes, its coverage).
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  source: string,
): { tensors: Map<string, TensorHeader>; metadata: Record<string, string> } {
  const { entries, metadata } = parseEntries(headerBytes, dataLength, source);
  return { tensors: new Map(entries.map((e) => [e.name, { dtype: e.dtype, shape: e.shape }])), metadata };
}

/** The header length of a `fileLength`-byte file (null: fewer than 8 bytes), checked against the file's size. */
function checkHeaderLength(headerLength: bigint | null, fileLength: number, source: string): number {
  if (headerLength === null) {
    throw fileError(source, `${fileLength} bytes is too short for a safetensors file (8-byte header length)`);
  }
  if (headerLength > BigInt(fileLength - 8)) {
    throw fileError(
      source,
      `truncated: the header length ${headerLength} runs past the end of the ${fileLength}-byte file`,
    );
  }
  return Number(headerLength);
}

/** Validates a header's entries against a data region of `dataLength` bytes. */
function parseEntries(
  headerBytes: Uint8Array,
  dataLength: number,
  source: string,
): { entries: Entry[]; metadata: Record<string, string> } {
  const header = parseHeader(headerBytes, source);
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) metadata = readMetadata(value, source);
    else entries.push(readEntry(name, value, dataLength, source));
  }
  checkCoverage(entries, dataLength, source);
  return { entries, metadata };
}

/**
 * Serializes tensors as safetensors bytes: F32 for Float32Array, I32 for Int32Array; tensors in the
 * order given; the header padded with spaces to a multiple of 8 bytes like Hugging Face's writer.
 */
export function serializeSafetensors(
  tensors: HostTensorEntries,
  metadata?: Record<string, string>,
): Uint8Array {
  return safetensorsBytes(tensors, metadata, "serializeSafetensors");
}

/** Options of {@linkcode checkTensorSet}. */
export interface TensorSetOptions {
  /** Expected names that may be absent (e.g. a tied `lm_head.weight`). */
  allowMissing?: string[];
  /** Whether a name that is not expected may be present (e.g. buffers a model does not load). */
  allowUnexpected?: (name: string) => boolean;
  /** Last lines for the error (how to accept what it found, say). */
  notes?: readonly string[];
}

/**
 * Checks a loaded set against the expected names and shapes; throws one error naming the file and
 * listing every missing tensor, unexpected tensor, and wrong shape (expected vs found).
 */
export function checkTensorSet(
  source: string,
  expected: Map<string, readonly number[]>,
  found: Map<string, { readonly shape: readonly number[] }>,
  options: TensorSetOptions = {},
): void {
  const allowMissing = new Set(options.allowMissing ?? []);
  const allowUnexpected = options.allowUnexpected ?? (() => false);
  const missing: string[] = [];
  const unexpected: string[] = [];
  const wrongShape: string[] = [];
  for (const [name, shape] of expected) {
    const tensor = found.get(name);
    if (tensor === undefined) {
      if (!allowMissing.has(name)) missing.push(`  missing "${name}" ${formatShape(shape)}`);
    } else if (!sameShape(tensor.shape, shape)) {
      wrongShape.push(
        `  wrong shape "${name}": expected ${formatShape(shape)}, found ${formatShape(tensor.shape)}`,
      );
    }
  }
  for (const [name, tensor] of found) {
    if (!expected.has(name) && !allowUnexpected(name)) {
      unexpected.push(`  unexpected "${name}" ${formatShape(tensor.shape)}`);
    }
  }
  if (missing.length + unexpected.length + wrongShape.length === 0) return;
  const counts =
    `${missing.length} missing, ${unexpected.length} unexpected, ${wrongShape.length} wrong shape`;
  const lines = [
    `tensors do not match the expected set (${counts}):`,
    ...missing,
    ...unexpected,
    ...wrongShape,
    ...(options.notes ?? []),
  ];
  throw fileError(source, lines.join("\n"));
}

/** An error about a whole file: its message begins with the file's name. */
export function fileError(source: string, message: string): SafetensorsError {
  return new SafetensorsError(`${source}: ${message}`);
}

function tensorError(source: string, name: string, message: string): SafetensorsError {
  return fileError(source, `tensor "${name}": ${message}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isDimension(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function parseHeader(headerBytes: Uint8Array, source: string): Record<string, unknown> {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw fileError(source, `the header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isRecord(header)) throw fileError(source, `the header is not a JSON object`);
  return header;
}

function isStringMap(value: unknown): value is Record<string, string> {
  return isRecord(value) && Object.values(value).every((v) => typeof v === "string");
}

function readMetadata(value: unknown, source: string): Record<string, string> {
  if (!isStringMap(value)) {
    throw fileError(source, `${METADATA_KEY} must map strings to strings, found ${JSON.stringify(value)}`);
  }
  return value;
}

function readEntry(name: string, value: unknown, dataLength: number, source: string): Entry {
  const invalid = (problem: string) => tensorError(source, name, problem);
  if (!isRecord(value)) throw invalid(`entry is not an object: ${JSON.stringify(value)}`);
  for (const field of ["dtype", "shape", "data_offsets"]) {
    if (!(field in value)) throw invalid(`entry has no "${field}"`);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== "string" || !DTYPES.includes(dtype as SafetensorsDtype)) {
    throw invalid(`unknown dtype ${JSON.stringify(dtype)} (known: ${DTYPES.join(", ")})`);
  }
  if (!Array.isArray(shape) || !shape.every(isDimension)) {
    throw invalid(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isDimension)) {
    throw invalid(`data_offsets ${JSON.stringify(offsets)} are not two non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  const range = `data_offsets [${begin}, ${end}]`;
  if (end < begin) throw invalid(`${range} are reversed`);
  if (end > dataLength) throw invalid(`${range} run past the end of the data region (${dataLength} bytes)`);
  const byteLength = shapeSize(shape) * DTYPE_BYTES[dtype as SafetensorsDtype];
  if (end - begin !== byteLength) {
    throw invalid(
      `${range} hold ${end - begin} bytes, but ${dtype} ${formatShape(shape)} takes ${byteLength}`,
    );
  }
  return { name, dtype: dtype as SafetensorsDtype, shape: [...shape], begin, end };
}

/** Throws unless the tensors' byte ranges tile the data region exactly, as Hugging Face's reader requires. */
function checkCoverage(entries: readonly Entry[], dataLength: number, source: string): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let last: Entry | undefined;
  for (const entry of sorted) {
    if (last !== undefined && entry.begin < covered) {
      const other = `tensor "${last.name}" [${last.begin}, ${last.end}]`;
      throw tensorError(source, entry.name, `data_offsets [${entry.begin}, ${entry.end}] overlap ${other}`);
    }
    if (entry.begin > covered) {
      throw fileError(source, `bytes [${covered}, ${entry.begin}) of the data region belong to no tensor`);
    }
    covered = entry.end;
    last = entry;
  }
  if (covered !== dataLength) {
    throw fileError(source, `bytes [${covered}, ${dataLength}) of the data region belong to no tensor`);
  }
}

/** Decodes one tensor into a fresh, aligned array (file data may sit at any byte offset). */
function decode(entry: Entry, view: DataView, dataStart: number, source: string): Float32Array | Int32Array {
  const start = dataStart + entry.begin;
  const count = shapeSize(entry.shape);
  const bytes = new Uint8Array(view.buffer, view.byteOffset + start, entry.end - entry.begin);
  switch (entry.dtype) {
    case "F32":
    case "I32": {
      // Deno runs only on little-endian hosts, so a byte copy is the conversion.
      const out = entry.dtype === "F32" ? new Float32Array(count) : new Int32Array(count);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case "F64": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(start + 8 * i, true);
      return out;
    }
    case "F16": {
      const table = halfTable();
      const bits = new Uint32Array(count);
      for (let i = 0; i < count; i++) bits[i] = table[view.getUint16(start + 2 * i, true)];
      return new Float32Array(bits.buffer);
    }
    case "BF16": {
      const bits = new Uint32Array(count);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(start + 2 * i, true) << 16;
      return new Float32Array(bits.buffer);
    }
    case "I64":
      return decodeInt64(entry, view, start, source);
    case "I16":
      return Int32Array.from({ length: count }, (_, i) => view.getInt16(start + 2 * i, true));
    case "I8":
      return Int32Array.from({ length: count }, (_, i) => view.getInt8(start + i));
    case "U8":
      return Int32Array.from(bytes);
    case "BOOL":
      return Int32Array.from(bytes, (b) => (b !== 0 ? 1 : 0));
  }
}

function decodeInt64(entry: Entry, view: DataView, start: number, source: string): Int32Array {
  const out = new Int32Array(shapeSize(entry.shape));
  for (let i = 0; i < out.length; i++) {
    const low = view.getInt32(start + 8 * i, true);
    // The value fits in int32 exactly when the high word is the sign extension of the low word.
    if (view.getInt32(start + 8 * i + 4, true) !== low >> 31) {
      const value = view.getBigInt64(start + 8 * i, true);
      throw tensorError(source, entry.name, `I64 element ${i} is ${value}, outside the int32 range`);
    }
    out[i] = low;
  }
  return out;
}

let halfBits: Uint32Array | undefined;

/** Float32 bit patterns of all 65536 float16 values, built on first use. */
function halfTable(): Uint32Array {
  if (halfBits === undefined) {
    halfBits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfBits[h] = halfToSingleBits(h);
  }
  return halfBits;
}

/** Exact float16 to float32 widening on bit patterns (subnormals normalised, NaN payloads kept). */
function halfToSingleBits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0x1f) return sign | 0x7f800000 | (mantissa << 13);
  if (exponent !== 0) return sign | ((exponent + 112) << 23) | (mantissa << 13);
  if (mantissa === 0) return sign;
  // A subnormal m * 2^-24: shift the leading one up to the implicit bit (0x400), lowering the exponent.
  const shift = Math.clz32(mantissa) - 21;
  return sign | ((113 - shift) << 23) | (((mantissa << shift) & 0x3ff) << 13);
}

/** {@linkcode serializeSafetensors} with errors that begin with `label`. */
export function safetensorsBytes(
  tensors: HostTensorEntries,
  metadata: Record<string, string> | undefined,
  label: string,
): Uint8Array {
  const entries: (readonly [string, HostTensor])[] = Symbol.iterator in tensors
    ? [...(tensors as Iterable<readonly [string, HostTensor]>)]
    : Object.entries(tensors);
  const fields: string[] = [];
  if (metadata !== undefined) {
    if (!isStringMap(metadata)) {
      throw new SafetensorsError(
        `${label}: metadata values must be strings, found ${JSON.stringify(metadata)}`,
      );
    }
    fields.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  const names = new Set<string>();
  let dataLength = 0;
  for (const [name, { shape, data }] of entries) {
    const invalid = (problem: string) => new SafetensorsError(`${label}: tensor "${name}": ${problem}`);
    if (name === METADATA_KEY) throw invalid("the name is reserved");
    if (names.has(name)) throw invalid("the name is given twice");
    names.add(name);
    const dtype = data instanceof Float32Array ? "F32" : data instanceof Int32Array ? "I32" : undefined;
    if (dtype === undefined) throw invalid("data must be a Float32Array or an Int32Array");
    if (!Array.isArray(shape) || !shape.every(isDimension)) {
      throw invalid(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (shapeSize(shape) !== data.length) {
      throw invalid(`shape ${formatShape(shape)} needs ${shapeSize(shape)} values, data has ${data.length}`);
    }
    const offsets = `[${dataLength},${dataLength + data.byteLength}]`;
    fields.push(
      `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${shape.join(",")}],"data_offsets":${offsets}}`,
    );
    dataLength += data.byteLength;
  }
  const json = new TextEncoder().encode(`{${fields.join(",")}}`);
  const headerLength = Math.ceil(json.length / HEADER_ALIGNMENT) * HEADER_ALIGNMENT;
  const out = new Uint8Array(8 + headerLength + dataLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let cursor = 8 + headerLength;
  for (const [, { data }] of entries) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), cursor);
    cursor += data.byteLength;
  }
  return out;
}
