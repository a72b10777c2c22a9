// Tests that cannot run here are skipped with the reason in their name and on stderr, never silently.

/** `it` when `why` is undefined, else a skipped test whose name and a stderr line say why. */
export function itUnless(why: string | undefined): jest.It {
  if (why === undefined) return it;
  return ((name: string, fn?: jest.ProvidesCallback) => {
    process.stderr.write(`[skip] ${name}: ${why}\n`);
    return it.skip(`${name} (skipped: ${why})`, fn);
  }) as jest.It;
}

/** `describe` when `why` is undefined, else a skipped suite whose name and a stderr line say why. */
export function describeUnless(why: string | undefined): jest.Describe {
  if (why === undefined) return describe;
  // The suite's body is not run: its hooks would start what is missing.
  return ((name: string) => {
    process.stderr.write(`[skip] ${name}: ${why}\n`);
    return describe(`${name} (skipped: ${why})`, () => {
      it.skip(`skipped: ${why}`, () => undefined);
    });
  }) as unknown as jest.Describe;
}
