// Learning-rate schedule: linear warm-up, then cosine decay to minLr (as timm's CosineLRScheduler
// with warmup_prefix). Pure: a function of the step.

export interface Schedule {
  readonly baseLr: number;
  readonly minLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
}

export function lrAt(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return (s.baseLr * (step + 1)) / s.warmupSteps;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  return s.minLr + 0.5 * (s.baseLr - s.minLr) * (1 + Math.cos(Math.PI * progress));
}
