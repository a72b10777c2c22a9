// Name globs over timm parameter names: `*` within a dotted segment, `**` across segments, `?` one
// character of a segment. Matched by a set of positions in the pattern (a Thompson simulation), so
// time is bounded by pattern length x name length whatever the pattern: never a backtracking regex.

/** Longer patterns than this are refused: a parameter name is a few dozen characters. */
export const MAX_GLOB_LENGTH = 256;

type Token = { readonly kind: 'char'; readonly ch: string } | { readonly kind: 'one' } | { readonly kind: 'segment' } | { readonly kind: 'any' };

export interface Glob {
  readonly source: string;
  test(name: string): boolean;
}

function tokens(glob: string): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      i++;
      // `**` swallows the stars next to it: `***` and `*` `**` mean what `**` means.
      while (glob[i + 1] === '*') i++;
      if (out.at(-1)?.kind === 'segment') out.pop();
      if (out.at(-1)?.kind !== 'any') out.push({ kind: 'any' });
    } else if (ch === '*') {
      if (out.at(-1)?.kind !== 'any' && out.at(-1)?.kind !== 'segment') out.push({ kind: 'segment' });
    } else if (ch === '?') out.push({ kind: 'one' });
    else out.push({ kind: 'char', ch });
  }
  return out;
}

export function compileGlob(glob: string): Glob {
  if (glob.length > MAX_GLOB_LENGTH) throw new Error(`a name glob may have at most ${MAX_GLOB_LENGTH} characters (this one has ${glob.length})`);
  const pattern = tokens(glob);
  const n = pattern.length;
  /** Adds position i and every position reachable from it without reading a character (a star may match nothing). */
  const close = (states: Uint8Array, i: number): void => {
    while (i <= n && !states[i]) {
      states[i] = 1;
      const t = pattern[i];
      if (!t || (t.kind !== 'any' && t.kind !== 'segment')) return;
      i++;
    }
  };
  return {
    source: glob,
    test(name: string): boolean {
      let now = new Uint8Array(n + 1);
      close(now, 0);
      for (const ch of name) {
        const next = new Uint8Array(n + 1);
        let alive = false;
        for (let i = 0; i < n; i++) {
          if (!now[i]) continue;
          const t = pattern[i];
          if (t.kind === 'any' || (t.kind === 'segment' && ch !== '.')) {
            next[i] = 1; // a star stays and reads on
            close(next, i + 1);
            alive = true;
          } else if ((t.kind === 'char' && t.ch === ch) || (t.kind === 'one' && ch !== '.')) {
            close(next, i + 1);
            alive = true;
          }
        }
        if (!alive) return false;
        now = next;
      }
      return now[n] === 1;
    },
  };
}
