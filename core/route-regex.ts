// HTTPRoute RegularExpression matches (paths, header and query values) run on
// V8's linear-time engine: an automaton that never backtracks, so no pattern and
// no input can hold the node's event loop (a backtracking `/(a+)+` took 3 s for a
// 29-character path, doubling per character). The control plane validates with
// this module and the node matches with it, so a route accepted is a route that
// runs. Why not RE2 itself: the WASM build has a fixed 16 MiB heap and never frees
// a compiled pattern (it aborted after 2,442 compiles, and a node recompiles its
// routes on every config change), costs 10 MiB per process and was 10x slower on
// hostile input; the native build needs a compiler and a download at install.
//
// The accepted language is what RE2 (Envoy's engine) and JavaScript both read the
// same way, so a route means here what it means on an Envoy mesh: no
// backreferences or lookarounds (RE2 has none), no escapes or classes that differ
// (`\pL`, `\z`, `\Q…\E`, `[[:alpha:]]` are literal text in JavaScript, or
// nothing), and no inline flags (`(?i)`) or counted repetitions above 16, which
// the linear engine cannot run. Rejections name the construct. The flag that
// enables the engine is not allowed in NODE_OPTIONS, so this module sets it
// itself, once, before anything compiles with it.

import { setFlagsFromString } from 'node:v8';
import { ErrorCode, NodemeshError } from './errors.ts';

setFlagsFromString('--enable-experimental-regexp-engine');
try {
  new RegExp('', 'l');
} catch (err) {
  throw new NodemeshError(ErrorCode.REGEX_ENGINE, `this Node.js has no linear-time regular-expression engine (the "l" flag); route regexes cannot run safely: ${(err as Error).message}`, { cause: err });
}

/** Escapes of a letter that RE2 and JavaScript read alike; `\b` `\B` only outside a class. */
const LETTER_ESCAPES = 'dDwWsSfnrtv';

/** Why `source` is no route regex, or undefined when it is one. */
export function routeRegexProblem(source: string): string | undefined {
  const syntax = syntaxProblem(source);
  if (syntax) return syntax;
  try {
    // Alone first: a source such as "a)|(b" must not escape the anchors around it.
    new RegExp(source, 'l');
    new RegExp(anchored(source), 'l');
  } catch (err) {
    const message = (err as Error).message;
    if (/linear time/.test(message)) {
      return 'cannot be matched in linear time (a counted repetition above {16}, or a group with flags): write it with * or + instead';
    }
    return `invalid regular expression: ${message}`;
  }
  return undefined;
}

/** The whole-value matcher for a route regex, on the linear engine. Throws on what `routeRegexProblem` rejects. */
export function compileRouteRegex(source: string): RegExp {
  const problem = routeRegexProblem(source);
  if (problem) throw new SyntaxError(`route regex ${JSON.stringify(source)}: ${problem}`);
  return new RegExp(anchored(source), 'l');
}

/** True when `re` runs on the linear-time engine (what the tests check of every compiled route regex). */
export function isLinear(re: RegExp): boolean {
  return re.flags.includes('l');
}

function anchored(source: string): string {
  return `^(?:${source})$`;
}

function syntaxProblem(s: string): string | undefined {
  let inClass = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\') {
      const n = s[i + 1];
      if (n === undefined) return 'ends with a lone backslash';
      if (n >= '1' && n <= '9') return `backreferences (\\${n}) are not supported: RE2 has none`;
      if (n === '0') return 'octal escapes (\\0) are not supported: write \\x00';
      if (n === 'k') return 'named backreferences (\\k<…>) are not supported: RE2 has none';
      if (n === 'x') {
        if (!/^[0-9A-Fa-f]{2}$/.test(s.slice(i + 2, i + 4))) return 'write \\x with exactly two hex digits (\\x{…} is not supported)';
        i += 3;
        continue;
      }
      if (/[A-Za-z]/.test(n) && !(LETTER_ESCAPES.includes(n) || (!inClass && (n === 'b' || n === 'B')))) {
        return `\\${n}${inClass ? ' in a character class' : ''} is not supported: RE2 and JavaScript read it differently`;
      }
      i++;
      continue;
    }
    if (inClass) {
      if (c === '[' && s[i + 1] === ':') return 'POSIX classes ([[:alpha:]]) are not supported: write the range, e.g. [a-zA-Z]';
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') {
      inClass = true;
      if (s[i + 1] === '^') i++;
      // RE2 reads "[]a]" as a class of "]" and "a", JavaScript as an empty class then "a]".
      if (s[i + 1] === ']') return 'a "]" first in a character class is not supported: escape it as \\]';
      continue;
    }
    if (c === '(' && s[i + 1] === '?') {
      const rest = s.slice(i + 2);
      if (rest.startsWith('=') || rest.startsWith('!')) return 'lookaheads ((?=…), (?!…)) are not supported: RE2 has none';
      if (rest.startsWith('<=') || rest.startsWith('<!')) return 'lookbehinds ((?<=…), (?<!…)) are not supported: RE2 has none';
      if (rest.startsWith('P<')) return 'write a named group as (?<name>…), not (?P<name>…)';
      if (rest.startsWith(':') || rest.startsWith('<')) continue;
      return 'inline flags ((?i), (?s), (?i:…)) are not supported by the linear-time engine';
    }
  }
  return undefined;
}
