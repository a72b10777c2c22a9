// The speed a run's shards showed: what lease deadlines and overdue replicas are measured by.

/** A deadline allows this many times the shard's steps at the run's median pace (or the worker's own, when slower). */
export const PACE_SLACK = 4;

export const median = (xs: readonly number[]): number | undefined => {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
