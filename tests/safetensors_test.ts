import {
  checkTensorSet,
  type HostTensor,
  parseSafetensors,
  SafetensorsError,
  serializeSafetensors,
} from "../models/safetensors.ts";
import { readSafetensors, writeSafetensors } from "../models/safetensors_file.ts";
import { assertBitwiseEqual } from "./helpers.ts";

const FIXTURES = new URL("./fixtures/hf/", import.meta.url);
const SOURCE = "test.safetensors";

/** Builds a file by hand: a header (object or raw JSON text), optional padding, then `data`. */
function rawFile(header: unknown, data: ArrayLike<number> = [], headerPadding = 0): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text + " ".repeat(headerPadding));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Little-endian bytes written by `write` into a fresh buffer of `byteLength` bytes. */
function littleEndian(byteLength: number, write: (view: DataView) => void): Uint8Array {
  const bytes = new Uint8Array(byteLength);
  write(new DataView(bytes.buffer));
  return bytes;
}

/** Runs `fn`, expecting a SafetensorsError whose message contains every fragment. */
function expectError(fn: () => unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  if (!(caught instanceof SafetensorsError)) {
    throw new Error(`expected a SafetensorsError containing ${JSON.stringify(fragments)}, got ${caught}`);
  }
  for (const fragment of fragments) {
    if (!caught.message.includes(fragment)) {
      throw new Error(`error message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(fragment)}`);
    }
  }
}

/** Awaits `promise`, expecting it to reject with a SafetensorsError containing every fragment. */
async function expectRejection(promise: Promise<unknown>, ...fragments: string[]): Promise<void> {
  const error = await promise.then(() => undefined, (error: unknown) => error);
  expectError(() => {
    throw error;
  }, ...fragments);
}

function assertEqual(actual: unknown, expected: unknown, label: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${label}: ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  }
}

function assertSameTensors(actual: Map<string, HostTensor>, expected: Map<string, HostTensor>): void {
  assertEqual([...actual.keys()], [...expected.keys()], "tensor names");
  for (const [name, tensor] of expected) {
    const loaded = actual.get(name)!;
    assertEqual(loaded.shape, tensor.shape, `${name} shape`);
    assertEqual(loaded.data.constructor.name, tensor.data.constructor.name, `${name} type`);
    assertBitwiseEqual(loaded.data, tensor.data, name);
  }
}

Deno.test("write then read returns identical tensors, metadata and order", async () => {
  const backing = new Float32Array([9, 1.5, -0, NaN, Infinity, -Infinity, 1e-45, 3.4e38, -2.25]);
  const tensors = new Map<string, HostTensor>([
    ["z.weight", { shape: [2, 2, 2], data: backing.subarray(1) }],
    ["a.ids", { shape: [5], data: new Int32Array([0, -1, 2147483647, -2147483648, 7]) }],
    ["empty", { shape: [0, 3], data: new Float32Array(0) }],
    ["scalar", { shape: [], data: new Float32Array([0.125]) }],
    ["int scalar", { shape: [], data: new Int32Array([-3]) }],
    ["odd", { shape: [1, 3, 1], data: new Float32Array([1, 2, 3]) }],
  ]);
  const metadata = { format: "pt", note: 'quotes " and unicode é' };
  const bytes = serializeSafetensors(tensors, metadata);
  assertBitwiseEqual(serializeSafetensors(tensors, metadata), bytes, "serializing twice");
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEqual(headerLength % 8, 0, "header length mod 8");
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
  assertEqual(headerText.trimEnd().length + 8 > headerLength, true, "padding under 8 spaces");
  assertEqual(JSON.parse(headerText).empty, { dtype: "F32", shape: [0, 3], data_offsets: [52, 52] }, "entry");

  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/round.safetensors`;
    await writeSafetensors(path, tensors, metadata);
    assertBitwiseEqual(await Deno.readFile(path), bytes, "file bytes");
    const loaded = await readSafetensors(path);
    assertSameTensors(loaded.tensors, tensors);
    assertEqual(loaded.metadata, metadata, "metadata");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  const fromRecord = serializeSafetensors({ b: { shape: [1], data: new Int32Array([4]) } });
  assertEqual([...parseSafetensors(fromRecord, SOURCE).tensors.keys()], ["b"], "record form");
  assertEqual(parseSafetensors(fromRecord, SOURCE).metadata, {}, "no metadata");
  assertEqual(parseSafetensors(serializeSafetensors([]), SOURCE).tensors.size, 0, "no tensors");
});

Deno.test("Hugging Face files load with known names, shapes and finite values, and re-serialize byte for byte", async () => {
  const known: [string, string, number[]][] = [
    ["gpt2/model", "transformer.wte.weight", [96, 32]],
    ["gpt2/model", "transformer.h.0.attn.c_attn.weight", [32, 96]],
    ["gpt2/grads", "transformer.h.1.mlp.c_fc.bias", [64]],
    ["gpt2/io", "input_ids", [2, 12]],
    ["gpt2/io", "logits", [2, 12, 96]],
    ["bert/model", "embeddings.word_embeddings.weight", [96, 32]],
    ["bert/model", "embeddings.position_embeddings.weight", [40, 32]],
    ["bert/grads", "pooler.dense.weight", [32, 32]],
    ["bert/io", "token_type_ids", [2, 12]],
    ["roberta/model", "embeddings.position_embeddings.weight", [42, 32]],
    ["roberta/io", "pooler_output", [2, 32]],
  ];
  for (const model of ["bert", "gpt2", "roberta"]) {
    for (const file of ["model", "io", "grads"]) {
      const url = new URL(`${model}/${file}.safetensors`, FIXTURES);
      const bytes = await Deno.readFile(url);
      const { tensors, metadata } = await readSafetensors(decodeURIComponent(url.pathname));
      if (tensors.size < 3) throw new Error(`${model}/${file}: only ${tensors.size} tensors`);
      for (const [name, { shape, data }] of tensors) {
        assertEqual(data.length, shape.reduce((a, b) => a * b, 1), `${model}/${file} ${name} size`);
        if (!data.every(Number.isFinite)) throw new Error(`${model}/${file} ${name}: non-finite values`);
      }
      assertEqual(metadata, file === "model" ? { format: "pt" } : {}, `${model}/${file} metadata`);
      const again = serializeSafetensors(tensors, file === "model" ? metadata : undefined);
      assertBitwiseEqual(again, bytes, `${model}/${file} re-serialized`);
      for (const [where, name, shape] of known) {
        if (where === `${model}/${file}`) assertEqual(tensors.get(name)?.shape, shape, `${where} ${name}`);
      }
    }
  }
  const io = await Deno.readFile(new URL("gpt2/io.safetensors", FIXTURES));
  const ids = parseSafetensors(io, "gpt2 io").tensors.get("input_ids")!;
  if (!(ids.data instanceof Int32Array) || !ids.data.every((v) => v >= 0 && v < 96)) {
    throw new Error(`gpt2 input_ids are not int32 token ids: ${ids.data}`);
  }
});

Deno.test("F16, BF16 and F64 decode to float32 exactly as hand-computed", () => {
  const half = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x3555, 0x8000, 0x7c00, 0xfc00, 0x7e00];
  const halfValues = [
    1,
    -2,
    65504,
    2 ** -24,
    1023 * 2 ** -24,
    2 ** -14,
    0.333251953125,
    -0,
    Infinity,
    -Infinity,
    NaN,
  ];
  const brain = [0x3f80, 0xc049, 0x0001, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x4780];
  const brainValues = [1, -3.140625, 2 ** -133, -0, Infinity, -Infinity, NaN, 65536];
  const double = [0.1, 1e40, -1e40, 1e-50, 2 ** -149, 1 + 2 ** -24, 1 + 3 * 2 ** -24, -0, NaN, 3.5];
  const doubleValues = [
    0.10000000149011612,
    Infinity,
    -Infinity,
    0,
    2 ** -149,
    1,
    1 + 2 ** -22,
    -0,
    NaN,
    3.5,
  ];
  const data = [
    littleEndian(2 * half.length, (v) => half.forEach((h, i) => v.setUint16(2 * i, h, true))),
    littleEndian(2 * brain.length, (v) => brain.forEach((h, i) => v.setUint16(2 * i, h, true))),
    littleEndian(8 * double.length, (v) => double.forEach((d, i) => v.setFloat64(8 * i, d, true))),
  ];
  const sizes = data.map((d) => d.length);
  const header = {
    h: { dtype: "F16", shape: [half.length], data_offsets: [0, sizes[0]] },
    b: { dtype: "BF16", shape: [brain.length], data_offsets: [sizes[0], sizes[0] + sizes[1]] },
    d: { dtype: "F64", shape: [2, 5], data_offsets: [sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]] },
  };
  // An odd padding puts every tensor at an unaligned file offset.
  const bytes = rawFile(header, [...data[0], ...data[1], ...data[2]], 3);
  for (const file of [bytes, Uint8Array.from([0, ...bytes]).subarray(1)]) {
    const { tensors } = parseSafetensors(file, SOURCE);
    assertBitwiseEqual(tensors.get("h")!.data, Float32Array.from(halfValues), "F16");
    assertBitwiseEqual(tensors.get("b")!.data, Float32Array.from(brainValues), "BF16");
    assertBitwiseEqual(tensors.get("d")!.data, Float32Array.from(doubleValues), "F64");
    assertEqual(tensors.get("d")!.shape, [2, 5], "F64 shape");
  }

  const all = littleEndian(2 * 65536, (v) => {
    for (let h = 0; h < 65536; h++) v.setUint16(2 * h, h, true);
  });
  const every =
    parseSafetensors(rawFile({ h: { dtype: "F16", shape: [65536], data_offsets: [0, 131072] } }, all), SOURCE)
      .tensors.get("h")!.data;
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    const expected = exponent === 31
      ? (mantissa ? NaN : sign * Infinity)
      : sign * (exponent ? 2 ** (exponent - 15) * (1 + mantissa / 1024) : mantissa * 2 ** -24);
    if (!Object.is(every[h], expected)) {
      throw new Error(`F16 0x${h.toString(16)}: ${every[h]}, expected ${expected}`);
    }
  }
});

Deno.test("integer and BOOL dtypes decode to int32; I64 outside int32 is an error", () => {
  const longs = [0n, -1n, 2147483647n, -2147483648n, 5n];
  const shorts = [-32768, 32767, -1, 0];
  const file = rawFile(
    {
      l: { dtype: "I64", shape: [5], data_offsets: [0, 40] },
      s: { dtype: "I16", shape: [2, 2], data_offsets: [40, 48] },
      c: { dtype: "I8", shape: [3], data_offsets: [48, 51] },
      u: { dtype: "U8", shape: [3], data_offsets: [51, 54] },
      m: { dtype: "BOOL", shape: [3], data_offsets: [54, 57] },
    },
    [
      ...littleEndian(40, (v) => longs.forEach((x, i) => v.setBigInt64(8 * i, x, true))),
      ...littleEndian(8, (v) => shorts.forEach((x, i) => v.setInt16(2 * i, x, true))),
      ...[0x80, 0x7f, 0xff],
      ...[0, 200, 255],
      ...[1, 0, 1],
    ],
    1,
  );
  const { tensors } = parseSafetensors(file, SOURCE);
  assertBitwiseEqual(tensors.get("l")!.data, Int32Array.from([0, -1, 2147483647, -2147483648, 5]), "I64");
  assertBitwiseEqual(tensors.get("s")!.data, Int32Array.from(shorts), "I16");
  assertBitwiseEqual(tensors.get("c")!.data, Int32Array.from([-128, 127, -1]), "I8");
  assertBitwiseEqual(tensors.get("u")!.data, Int32Array.from([0, 200, 255]), "U8");
  assertBitwiseEqual(tensors.get("m")!.data, Int32Array.from([1, 0, 1]), "BOOL");

  for (const value of [2147483648n, -2147483649n, 2n ** 40n]) {
    const bad = rawFile(
      { ids: { dtype: "I64", shape: [2], data_offsets: [0, 16] } },
      littleEndian(16, (v) => v.setBigInt64(8, value, true)),
    );
    expectError(
      () => parseSafetensors(bad, SOURCE),
      SOURCE,
      `tensor "ids"`,
      `element 1 is ${value}`,
      "int32",
    );
  }
});

Deno.test("malformed files fail with errors naming the file and the tensor", () => {
  const f32 = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
    dtype: "F32",
    shape,
    data_offsets: [begin, end],
  });
  const eight = new Uint8Array(8);
  expectError(() => parseSafetensors(new Uint8Array(5), SOURCE), SOURCE, "5 bytes", "too short");
  const truncated = rawFile({ a: f32(0, 8) }, eight).subarray(0, 20);
  expectError(
    () => parseSafetensors(truncated, SOURCE),
    SOURCE,
    "truncated",
    "runs past the end of the 20-byte file",
  );
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
  expectError(() => parseSafetensors(huge, SOURCE), SOURCE, "truncated", "9223372036854775808");
  expectError(() => parseSafetensors(rawFile('{"a": {'), SOURCE), SOURCE, "not valid UTF-8 JSON");
  expectError(() => parseSafetensors(rawFile("\xff"), SOURCE), SOURCE, "not valid UTF-8 JSON");
  const invalidUtf8 = rawFile("{}");
  invalidUtf8[9] = 0xff;
  expectError(() => parseSafetensors(invalidUtf8, SOURCE), SOURCE, "not valid UTF-8 JSON");
  for (const header of ["[1, 2]", "null", "3", '"text"']) {
    expectError(() => parseSafetensors(rawFile(header), SOURCE), SOURCE, "header is not a JSON object");
  }
  const cases: [Record<string, unknown>, number, string[]][] = [
    [{ a: 3 }, 0, [`tensor "a"`, "entry is not an object"]],
    [{ a: { shape: [2], data_offsets: [0, 8] } }, 8, [`tensor "a"`, `no "dtype"`]],
    [{ a: { dtype: "F32", data_offsets: [0, 8] } }, 8, [`tensor "a"`, `no "shape"`]],
    [{ a: { dtype: "F32", shape: [2] } }, 8, [`tensor "a"`, `no "data_offsets"`]],
    [{ a: { ...f32(0, 8), dtype: "F8_E4M3" } }, 8, [
      `tensor "a"`,
      `unknown dtype "F8_E4M3"`,
      "known: F64, F32",
    ]],
    [{ a: { ...f32(0, 8), dtype: "toString" } }, 8, [`tensor "a"`, `unknown dtype "toString"`]],
    [{ a: { ...f32(0, 8), dtype: 4 } }, 8, [`tensor "a"`, "unknown dtype 4"]],
    [{ a: f32(0, 8, [2.5]) }, 8, [`tensor "a"`, "shape [2.5] is not a list of non-negative integers"]],
    [{ a: f32(0, 8, [-2]) }, 8, [`tensor "a"`, "shape [-2]"]],
    [{ a: { ...f32(0, 8), shape: "2" } }, 8, [`tensor "a"`, `shape "2"`]],
    [{ a: { ...f32(0, 8), shape: ["2"] } }, 8, [`tensor "a"`, `shape ["2"]`]],
    [{ a: { ...f32(0, 8), data_offsets: [0] } }, 8, [`tensor "a"`, "data_offsets [0] are not two"]],
    [{ a: { ...f32(0, 8), data_offsets: [-8, 0] } }, 8, [`tensor "a"`, "data_offsets [-8,0]"]],
    [{ a: { ...f32(0, 8), data_offsets: [8, 0] } }, 8, [`tensor "a"`, "data_offsets [8, 0] are reversed"]],
    [{ a: f32(0, 12) }, 8, [`tensor "a"`, "[0, 12] run past the end of the data region (8 bytes)"]],
    [{ a: f32(0, 8, [3]) }, 8, [`tensor "a"`, "[0, 8] hold 8 bytes, but F32 [3] takes 12"]],
    [{ a: { dtype: "F16", shape: [2, 3], data_offsets: [0, 8] } }, 8, [`tensor "a"`, "F16 [2, 3] takes 12"]],
    [{ a: f32(0, 8), b: f32(4, 12) }, 12, [`tensor "b"`, `[4, 12] overlap tensor "a" [0, 8]`]],
    [{ a: f32(0, 8), e: f32(4, 4) }, 8, [`tensor "e"`, `[4, 4] overlap tensor "a" [0, 8]`]],
    [{ a: f32(0, 4), b: f32(8, 12) }, 12, ["bytes [4, 8) of the data region belong to no tensor"]],
    [{ a: f32(0, 4) }, 8, ["bytes [4, 8) of the data region belong to no tensor"]],
    [{}, 4, ["bytes [0, 4) of the data region belong to no tensor"]],
    [{ __metadata__: { format: 1 }, a: f32(0, 8) }, 8, [
      '__metadata__ must map strings to strings, found {"format":1}',
    ]],
    [{ __metadata__: ["pt"] }, 0, ["__metadata__ must map strings to strings"]],
  ];
  for (const [header, dataLength, fragments] of cases) {
    expectError(
      () => parseSafetensors(rawFile(header, new Uint8Array(dataLength)), SOURCE),
      SOURCE,
      ...fragments,
    );
  }
  // Empty tensors may sit anywhere between others, as in Hugging Face's files.
  const empties = rawFile({ a: f32(0, 4), e: f32(4, 4), b: f32(4, 8), z: f32(8, 8, [0, 2]) }, eight);
  assertEqual([...parseSafetensors(empties, SOURCE).tensors.keys()], ["a", "e", "b", "z"], "empty tensors");
});

Deno.test("serializing rejects tensors the format cannot hold", () => {
  const ok = { shape: [2], data: new Float32Array(2) };
  const label = "serializeSafetensors";
  expectError(
    () => serializeSafetensors({ w: { shape: [3], data: new Float32Array(2) } }),
    label,
    `tensor "w"`,
    "[3] needs 3 values, data has 2",
  );
  expectError(
    () => serializeSafetensors({ w: { shape: [-1], data: new Float32Array(0) } }),
    `tensor "w"`,
    "shape [-1]",
  );
  const f64 = { shape: [1], data: new Float64Array(1) as unknown as Float32Array };
  expectError(() => serializeSafetensors({ w: f64 }), `tensor "w"`, "Float32Array or an Int32Array");
  expectError(() => serializeSafetensors([["w", ok], ["w", ok]]), `tensor "w"`, "given twice");
  expectError(() => serializeSafetensors({ __metadata__: ok }), `tensor "__metadata__"`, "reserved");
  const badMetadata = { epoch: 3 } as unknown as Record<string, string>;
  expectError(() => serializeSafetensors({ w: ok }, badMetadata), label, "metadata values must be strings");
});

Deno.test("writes are atomic: no temporary file remains and a failed write keeps the old file", async () => {
  const dir = await Deno.makeTempDir();
  const listing = async () => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  try {
    const path = `${dir}/model.safetensors`;
    const first = { w: { shape: [2], data: new Float32Array([1, 2]) } };
    await writeSafetensors(path, first);
    const before = await Deno.readFile(path);
    const mismatched = { w: { shape: [3], data: new Float32Array(2) } };
    await expectRejection(writeSafetensors(path, mismatched), `writeSafetensors: ${path}`, `tensor "w"`);
    assertBitwiseEqual(await Deno.readFile(path), before, "file after a failed serialization");
    assertEqual(await listing(), ["model.safetensors"], "files after a failed serialization");

    // A rename onto a non-empty directory fails after the temporary file was written.
    await Deno.mkdir(`${dir}/occupied`);
    await Deno.writeTextFile(`${dir}/occupied/keep`, "x");
    let renameFailed = false;
    await writeSafetensors(`${dir}/occupied`, first).catch(() => renameFailed = true);
    assertEqual(renameFailed, true, "write onto a directory fails");
    assertEqual(await listing(), ["model.safetensors", "occupied"], "files after a failed rename");

    await writeSafetensors(path, { v: { shape: [1], data: new Int32Array([7]) } }, { step: "2" });
    assertEqual(await listing(), ["model.safetensors", "occupied"], "files after overwriting");
    const loaded = await readSafetensors(path);
    assertEqual([...loaded.tensors.get("v")!.data], [7], "overwritten contents");
    assertEqual(loaded.metadata, { step: "2" }, "overwritten metadata");

    await Deno.writeFile(`${dir}/short.safetensors`, new Uint8Array(3));
    await expectRejection(readSafetensors(`${dir}/short.safetensors`), `${dir}/short.safetensors: 3 bytes`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkTensorSet lists every missing, unexpected and wrongly shaped tensor in one error", () => {
  const host = (shape: number[]): HostTensor => ({
    shape,
    data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
  });
  const expected = new Map<string, readonly number[]>([
    ["wte", [96, 32]],
    ["ln.weight", [32]],
    ["lm_head.weight", [96, 32]],
    ["h.0.bias", [64]],
    ["h.1.bias", [64]],
  ]);
  const found = new Map([
    ["wte", host([96, 32])],
    ["ln.weight", host([32, 1])],
    ["h.1.bias", host([] as number[])],
    ["attn.masked_bias", host([])],
    ["extra", host([3])],
  ]);
  expectError(
    () => checkTensorSet("gpt2.safetensors", expected, found),
    [
      "gpt2.safetensors: tensors do not match the expected set (2 missing, 2 unexpected, 2 wrong shape):",
      '  missing "lm_head.weight" [96, 32]',
      '  missing "h.0.bias" [64]',
      '  unexpected "attn.masked_bias" []',
      '  unexpected "extra" [3]',
      '  wrong shape "ln.weight": expected [32], found [32, 1]',
      '  wrong shape "h.1.bias": expected [64], found []',
    ].join("\n"),
  );
  const options = {
    allowMissing: ["lm_head.weight", "h.0.bias"],
    allowUnexpected: (name: string) => name !== "ln.weight",
  };
  expectError(
    () => checkTensorSet("x", expected, found, options),
    "(0 missing, 0 unexpected, 2 wrong shape)",
  );
  found.set("ln.weight", host([32]));
  found.set("h.1.bias", host([64]));
  checkTensorSet("x", expected, found, options);
  checkTensorSet("x", new Map(), new Map());
});
