// `partune runs list|show|cancel`: the server's runs from the command line, as the dashboard shows them.
import { CancelRun, RunFilter, RunList, RunShow, RunStatus } from '../protocol/operations';
import { Options, str, optionalInt, say } from './commands';
import { UsageError } from './options';
import { client } from './platform';

const STATUSES: readonly RunStatus[] = ['PREPARING', 'RUNNING', 'WAITING', 'FINALIZING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];

const percent = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(2)}%`);

function filterFrom(o: Options): RunFilter {
  const status = str(o, 'status')?.toUpperCase();
  if (status !== undefined && !(STATUSES as readonly string[]).includes(status)) {
    throw new UsageError(`--status: unknown status '${str(o, 'status')}'; choose one of ${STATUSES.map((s) => s.toLowerCase()).join(', ')}`);
  }
  return { status: status as RunStatus | undefined, model: str(o, 'model'), dataset: str(o, 'dataset') };
}

export async function runsListCommand(o: Options): Promise<Record<string, unknown>> {
  const first = optionalInt(o, 'first') ?? 20;
  if (first < 1 || first > 100) throw new UsageError(`--first: must be between 1 and 100 (got ${first})`);
  const { runs } = await client(o).request(RunList, { filter: filterFrom(o), first, offset: 0 });
  const rows = runs.items.map((r) => [
    r.id, r.status.toLowerCase(), `${Math.round(r.progress * 100)}%`, percent(r.accuracy), r.strategyName, r.model.name, r.dataset.name,
    r.createdAt.slice(0, 19).replace('T', ' '),
  ]);
  const table = [['RUN', 'STATUS', 'DONE', 'TOP-1', 'STRATEGY', 'MODEL', 'DATASET', 'STARTED (UTC)'], ...rows];
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
  if (!o.json) for (const row of table) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()}\n`);
  say(o, `${runs.items.length} of ${runs.total} run(s)${runs.total > runs.items.length ? ' (newest first; --first N for more)' : ''}`);
  return { command: 'runs list', total: runs.total, runs: runs.items };
}

export async function runsShowCommand(o: Options, [id]: string[]): Promise<Record<string, unknown>> {
  const { run } = await client(o).request(RunShow, { id });
  if (!o.json) {
    const count = (n: number | null): string => (n ?? 0).toLocaleString('en-US');
    const tuned = run.tunedParameters === null ? '' : `, ${count(run.tunedParameters)} of ${count(run.totalParameters)} parameters tuned`;
    const testLoss = run.loss === null ? '' : `, test loss ${run.loss.toFixed(4)}`;
    const d = run.delta;
    const delta = d && `  delta ${d.id}: ${(d.bytes / 1024).toFixed(1)} KiB, ${d.tensors} tensors, sha256 ${d.sha256.slice(0, 16)}`;
    const epochs = run.metrics.filter((m) => m.testAccuracy !== null)
      .map((m) => `  epoch ${m.epoch.toFixed(2)} step ${m.step}: train loss ${m.trainLoss?.toFixed(4) ?? '-'}, top-1 ${percent(m.testAccuracy)}`);
    const lines = [
      `run ${run.id} (${run.kind.toLowerCase()}): ${run.status.toLowerCase()}${run.waiting ? ` - ${run.waiting}` : ''}`,
      `  ${run.strategyName} on ${run.model.name}, dataset ${run.dataset.name}${tuned}`,
      `  step ${run.step}/${run.totalSteps} (round ${run.round}), top-1 ${percent(run.accuracy)}${testLoss}`,
      `  started ${run.createdAt}${run.finishedAt ? `, ended ${run.finishedAt}` : ''}`,
      ...(run.error ? [`  error: ${run.error}`] : []),
      ...(delta ? [delta] : []),
      ...epochs,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return { command: 'runs show', ...run };
}

export async function runsCancelCommand(o: Options, [id]: string[]): Promise<Record<string, unknown>> {
  const { cancelRun } = await client(o).request(CancelRun, { id });
  say(o, `run ${cancelRun.id}: ${cancelRun.status.toLowerCase()}`);
  return { command: 'runs cancel', ...cancelRun };
}
