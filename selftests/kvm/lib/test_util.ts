// Host-side assertions of the KVM selftests (include/test_util.h, lib/assert.c): the failure banner
// with the caller's file:line, exit 254, and requirement skips.

import * as fs from 'node:fs';
import { SourceMap } from 'node:module';
import * as path from 'node:path';
import { threadId } from 'node:worker_threads';
import { EACCES, strerror } from '../../../proto/errno';
import { KSFT_SKIP, ksft_exit_skip, writeFdSync } from '../../kselftest';

/** Exit code of a failed TEST_ASSERT; lib/assert.c uses 254 rather than KSFT_FAIL. */
export const TEST_ASSERT_EXIT_CODE = 254;

/**
 * Where the errno shown in the banner comes from: a number, or an error object with an `errno`
 * field (KvmError, SyscallError, a Node ErrnoException). Node reports errno negated; the sign is dropped.
 */
export type ErrnoSource = number | { readonly errno?: unknown } | null | undefined;

/** A position in a source file; line and column are 1-based like a stack trace. */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
}

/** Values TEST_ASSERT_EQ compares; a bigint and an integer number compare by value. */
export type AssertScalar = bigint | number | string | boolean;

/**
 * TEST_ASSERT: if `cond` is falsy, print the failure banner to stderr and exit 254.
 *
 * The banner names the caller's file:line and the text of `cond` as written there; `errno`
 * fills the `errno=` field (0 if not given). An EACCES failure is a skip (exit 4), as in the kernel,
 * since it means the test was not allowed to run rather than that KVM misbehaved.
 */
export function TEST_ASSERT(cond: unknown, message?: string, errno?: ErrnoSource): asserts cond {
  if (cond) return;
  const site = callSite(TEST_ASSERT, 'TEST_ASSERT');
  assertionFailed(site?.loc, site?.args?.[0] ?? firstLine(message) ?? 'TEST_ASSERT', message, errnoOf(errno));
}

/**
 * TEST_ASSERT_EQ: fail unless `a` equals `b`, with the kernel's message `<a> != <b> (<aText> != <bText>)`.
 *
 * Integers print as C's `%#lx` does (hex, `0x` prefix, 0 as `0`, negatives as 64-bit two's
 * complement); strings print quoted. `what`, if given, is printed as one more line of context.
 */
export function TEST_ASSERT_EQ(a: AssertScalar, b: AssertScalar, what?: string): void {
  if (scalarsEqual(a, b)) return;
  const site = callSite(TEST_ASSERT_EQ, 'TEST_ASSERT_EQ');
  const aText = site?.args?.[0] ?? 'a';
  const bText = site?.args?.[1] ?? 'b';
  let message = `${formatScalar(a)} != ${formatScalar(b)} (${aText} != ${bText})`;
  if (what !== undefined) message += `\n${what}`;
  assertionFailed(site?.loc, `${aText} == ${bText}`, message, 0);
}

/** TEST_FAIL: an unconditional TEST_ASSERT failure (the banner's expression reads `false`). */
export function TEST_FAIL(message: string, errno?: ErrnoSource): never {
  const site = callSite(TEST_FAIL, 'TEST_FAIL');
  assertionFailed(site?.loc, 'false', message, errnoOf(errno));
}

/**
 * TEST_REQUIRE: skip the test (exit 4) unless `cond` holds, printing
 * `1..0 # SKIP - Requirement not met: <text>`; `text` defaults to the condition as written.
 */
export function TEST_REQUIRE(cond: unknown, text?: string): asserts cond {
  if (cond) return;
  const shown = text ?? callSite(TEST_REQUIRE, 'TEST_REQUIRE')?.args?.[0] ?? 'condition';
  skip(`- Requirement not met: ${shown}`);
}

/** __TEST_REQUIRE: skip the test (exit 4) unless `cond` holds, with a custom reason `- <text>`. */
export function __TEST_REQUIRE(cond: unknown, text: string): asserts cond {
  if (cond) return;
  skip(`- ${text}`);
}

/**
 * What a failed assertion or requirement ends: the whole program (exit 254 / skip), or, inside a
 * kselftest_harness test, only that test (the harness installs a hook; the kernel forks per test).
 */
export interface AssertionHook {
  fail(): never;
  skip(reason: string): never;
}

let hook: AssertionHook | undefined;

/** Install (or remove) the hook a test harness uses while a test runs. */
export function setAssertionHook(h: AssertionHook | undefined): void {
  hook = h;
}

function skip(reason: string): never {
  if (hook) hook.skip(reason);
  ksft_exit_skip(`${reason}\n`);
}

/** usleep for the host side, in milliseconds: blocks this thread (the vCPUs run in the kernel-model). */
export function msleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** pr_info: progress text on stdout, written synchronously so it precedes any later failure banner. */
export function pr_info(text: string): void {
  writeFdSync(1, text.endsWith('\n') ? text : `${text}\n`);
}

function assertionFailed(loc: SourceLocation | undefined, expression: string, message: string | undefined, errno: number): never {
  const where = loc ? `${displayPath(loc.file)}:${loc.line}` : '<unknown>:0';
  const lines = [
    '==== Test Assertion Failure ====',
    `  ${where}: ${expression}`,
    `  pid=${process.pid} tid=${threadId} errno=${errno} - ${errno === 0 ? 'Success' : strerror(errno)}`,
  ];
  if (message !== undefined && message !== '') {
    const body = message.endsWith('\n') ? message.slice(0, -1) : message;
    for (const l of body.split('\n')) lines.push(`  ${l}`);
  }
  writeFdSync(2, `${lines.join('\n')}\n`);
  if (hook) {
    if (errno === EACCES) hook.skip('Access denied');
    hook.fail();
  }
  if (errno === EACCES) {
    writeFdSync(1, 'Access denied - Exiting, skipping test\n');
    process.exit(KSFT_SKIP);
  }
  process.exit(TEST_ASSERT_EXIT_CODE);
}

function errnoOf(src: ErrnoSource): number {
  const raw = typeof src === 'number' ? src : typeof src === 'object' && src !== null ? src.errno : undefined;
  return typeof raw === 'number' && Number.isInteger(raw) ? Math.abs(raw) : 0;
}

function firstLine(text: string | undefined): string | undefined {
  if (text === undefined || text === '') return undefined;
  return text.split('\n')[0];
}

/** Equality as TEST_ASSERT_EQ sees it: a bigint equals an integer number of the same value. */
export function scalarsEqual(a: AssertScalar, b: AssertScalar): boolean {
  if (typeof a === 'bigint' && typeof b === 'number') return Number.isInteger(b) && a === BigInt(b);
  if (typeof a === 'number' && typeof b === 'bigint') return Number.isInteger(a) && BigInt(a) === b;
  return Object.is(a, b) || a === b;
}

/** A value as C's %#lx shows it (integers), or quoted (strings). */
export function formatScalar(v: AssertScalar): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number' && !Number.isSafeInteger(v)) return String(v);
  const u = BigInt.asUintN(64, BigInt(v));
  return u === 0n ? '0' : `0x${u.toString(16)}`;
}

// ---- Where was I called from? ----

/** The caller of `fn` and, when its source can be read, the text of the arguments it passed to `name`. */
function callSite(fn: (...args: never[]) => unknown, name: string): { loc: SourceLocation; args?: string[] } | undefined {
  const loc = stackLocation(fn);
  if (!loc) return undefined;
  const source = sourceLocation(loc);
  return { loc: source, args: callArgumentsAt(source, name) };
}

/** Where `fn` was called from, mapped to the source file and shown as the kernel shows it (x86/foo_test.c). */
export function callerLocation(fn: (...args: never[]) => unknown): SourceLocation | undefined {
  const loc = stackLocation(fn);
  if (!loc) return undefined;
  const source = sourceLocation(loc);
  return { ...source, file: displayPath(source.file) };
}

function stackLocation(fn: (...args: never[]) => unknown): SourceLocation | undefined {
  const holder: { stack?: string } = {};
  const limit = Error.stackTraceLimit;
  // Someone may have set the limit to 0; one frame above `fn` is all that is needed.
  Error.stackTraceLimit = Math.max(limit, 1);
  try {
    Error.captureStackTrace(holder, fn);
  } finally {
    Error.stackTraceLimit = limit;
  }
  const frame = (holder.stack ?? '').split('\n').find((l) => /^\s+at /.test(l));
  const m = frame ? /^\s+at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/.exec(frame) : null;
  if (!m) return undefined;
  const file = m[1].startsWith('file://') ? decodeURIComponent(m[1].slice('file://'.length)) : m[1];
  return { file, line: Number(m[2]), column: Number(m[3]) };
}

const LIB_DIR = __dirname;
/** Directories a reported path is shown relative to, so it reads like the kernel's `x86/foo_test.c`. */
const KVM_DIRS = (() => {
  const kvmDir = path.dirname(LIB_DIR);
  const dirs = [kvmDir];
  // Compiled into <repo>/dist/selftests/kvm: the sources live in <repo>/selftests/kvm.
  if (path.basename(path.dirname(path.dirname(kvmDir))) === 'dist') {
    dirs.unshift(path.resolve(kvmDir, '..', '..', '..', 'selftests', 'kvm'));
  }
  return dirs;
})();

function displayPath(file: string): string {
  for (const dir of KVM_DIRS) {
    const rel = path.relative(dir, file);
    if (rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)) return rel;
  }
  return file;
}

const fileCache = new Map<string, string | undefined>();

function readText(file: string): string | undefined {
  if (!fileCache.has(file)) {
    let text: string | undefined;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      text = undefined;
    }
    fileCache.set(file, text);
  }
  return fileCache.get(file);
}

const mapCache = new Map<string, { map: SourceMap; dir: string } | undefined>();

/** The source map of a compiled .js file (`//# sourceMappingURL=`, a file or a data: URL), parsed by Node. */
function loadSourceMap(jsFile: string): { map: SourceMap; dir: string } | undefined {
  if (mapCache.has(jsFile)) return mapCache.get(jsFile);
  let found: { map: SourceMap; dir: string } | undefined;
  const js = readText(jsFile);
  const url = js ? /\/\/[#@] sourceMappingURL=(\S+)\s*$/.exec(js)?.[1] : undefined;
  try {
    if (url?.startsWith('data:')) {
      const comma = url.indexOf(',');
      const payload = url.slice(comma + 1);
      const json = url.slice(0, comma).endsWith(';base64') ? Buffer.from(payload, 'base64').toString('utf8') : decodeURIComponent(payload);
      found = { map: new SourceMap(JSON.parse(json)), dir: path.dirname(jsFile) };
    } else if (url) {
      const mapFile = path.resolve(path.dirname(jsFile), decodeURIComponent(url));
      const text = readText(mapFile);
      if (text !== undefined) found = { map: new SourceMap(JSON.parse(text)), dir: path.dirname(mapFile) };
    }
  } catch {
    found = undefined;
  }
  mapCache.set(jsFile, found);
  return found;
}

/**
 * Map a generated .js position back to its original source through the file's source map, with
 * Node's own source-map support. Positions that cannot be mapped come back unchanged.
 *
 * Stack traces of compiled selftests point into dist/; this is what makes a failure name the .ts
 * line instead. (When Node or ts-node already rewrote the stack, the position is not a mapped .js
 * file any more and passes through.)
 */
export function sourceLocation(loc: SourceLocation): SourceLocation {
  const loaded = loc.file.endsWith('.js') ? loadSourceMap(loc.file) : undefined;
  if (!loaded) return loc;
  const entry = loaded.map.findEntry(loc.line - 1, loc.column - 1) as { originalSource?: string; originalLine?: number; originalColumn?: number };
  if (entry.originalSource === undefined || entry.originalLine === undefined || entry.originalColumn === undefined) return loc;
  const payload = loaded.map.payload as { sourceRoot?: string; sources?: string[]; sourcesContent?: (string | null)[] };
  const file = path.resolve(loaded.dir, payload.sourceRoot ?? '', entry.originalSource);
  const content = payload.sourcesContent?.[payload.sources?.indexOf(entry.originalSource) ?? -1];
  if (typeof content === 'string' && !fileCache.has(file)) fileCache.set(file, content);
  return { file, line: entry.originalLine + 1, column: entry.originalColumn + 1 };
}

/** The argument texts of the call to `name` at `loc`, whitespace collapsed; undefined if not recognisable. */
function callArgumentsAt(loc: SourceLocation, name: string): string[] | undefined {
  const src = readText(loc.file);
  if (src === undefined) return undefined;
  let lineStart = 0;
  for (let l = 1; l < loc.line; l++) {
    const nl = src.indexOf('\n', lineStart);
    if (nl < 0) return undefined;
    lineStart = nl + 1;
  }
  const lineEnd = src.indexOf('\n', lineStart) < 0 ? src.length : src.indexOf('\n', lineStart);
  const lineText = src.slice(lineStart, lineEnd);
  const column = loc.column - 1;
  // The stack's column points at the callee's name for `f(...)`/`ns.f(...)`, and at the argument
  // list for compiled `(0, mod.f)(...)`: take the nearest whole-word `name` at or before the column.
  let before = -1;
  let after = -1;
  const word = new RegExp(`(?<![\\w$])${name}(?![\\w$])`, 'g');
  for (let m = word.exec(lineText); m; m = word.exec(lineText)) {
    if (m.index <= column) before = m.index;
    else if (after < 0) after = m.index;
  }
  const at = before >= 0 ? before : after;
  if (at < 0) return undefined;
  const open = /^\s*\)?\s*(?:<[^()]*>)?\s*\(/.exec(src.slice(lineStart + at + name.length));
  if (!open) return undefined;
  return splitArguments(src, lineStart + at + name.length + open[0].length);
}

/** Split the argument list that starts after an opening parenthesis at `from`; handles strings, templates, comments, nesting. */
function splitArguments(src: string, from: number): string[] | undefined {
  const args: string[] = [];
  let start = from;
  const end = scanCode(src, from, ')', (comma) => {
    args.push(src.slice(start, comma));
    start = comma + 1;
  });
  if (end < 0) return undefined;
  args.push(src.slice(start, end));
  const texts = args.map((a) => a.replace(/\s+/g, ' ').trim());
  if (texts.length > 0 && texts[texts.length - 1] === '') texts.pop();
  return texts;
}

const SCAN_LIMIT = 8000;

/** Index of the `closer` that ends the code starting at `from`, or -1; reports top-level commas. */
function scanCode(src: string, from: number, closer: string, onComma?: (at: number) => void): number {
  const stack: string[] = [];
  const limit = Math.min(src.length, from + SCAN_LIMIT);
  for (let i = from; i < limit; i++) {
    const c = src[i];
    if (c === '"' || c === "'") {
      i = skipQuoted(src, i, c);
    } else if (c === '`') {
      i = skipTemplate(src, i);
    } else if (c === '/' && src[i + 1] === '/') {
      i = src.indexOf('\n', i);
    } else if (c === '/' && src[i + 1] === '*') {
      const close = src.indexOf('*/', i + 2);
      i = close < 0 ? -1 : close + 1;
    } else if (c === '(' || c === '[' || c === '{') {
      stack.push(c === '(' ? ')' : c === '[' ? ']' : '}');
    } else if (c === ')' || c === ']' || c === '}') {
      if (stack.length === 0) return c === closer ? i : -1;
      if (stack.pop() !== c) return -1;
    } else if (c === ',' && stack.length === 0) {
      onComma?.(i);
    }
    if (i < 0) return -1;
  }
  return -1;
}

function skipQuoted(src: string, i: number, quote: string): number {
  for (let j = i + 1; j < src.length; j++) {
    if (src[j] === '\\') j++;
    else if (src[j] === quote) return j;
    else if (src[j] === '\n') return -1;
  }
  return -1;
}

function skipTemplate(src: string, i: number): number {
  for (let j = i + 1; j < src.length; j++) {
    if (src[j] === '\\') {
      j++;
    } else if (src[j] === '`') {
      return j;
    } else if (src[j] === '$' && src[j + 1] === '{') {
      j = scanCode(src, j + 2, '}');
      if (j < 0) return -1;
    }
  }
  return -1;
}
