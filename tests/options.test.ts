// One TrainOptions for every front end: defaults, checks that name the option by its meaning, the
// schedule arithmetic; the run options around it; and the shard job a worker decodes.
import {
  OptionError, TRAIN_DEFAULTS, layerOf, paramGroup, paramSpecs, parseTrainOptions, parseVitConfig, preset, trainingSchedule,
} from '../engine';
import { RUN_DEFAULTS, parseRunOptions, trainOptionsOf } from '../protocol/run-options';
import { decodeShardJob, expectedUpdateLabel } from '../protocol/shard-job';

describe('TrainOptions', () => {
  it('fill defaults, keep what is given, leave optional ones unset', () => {
    expect(parseTrainOptions({})).toEqual(TRAIN_DEFAULTS);
    const o = parseTrainOptions({ lr: 3e-3, maxSteps: 7, testLimit: null, flip: true });
    expect([o.lr, o.maxSteps, o.flip, 'testLimit' in o, o.batchSize]).toEqual([3e-3, 7, true, false, 32]);
  });

  it.each([
    [{ batchSize: 0 }, 'batchSize', 'the batch size must be an integer from 1 to 4096 (got 0)'],
    [{ epochs: 1.5 }, 'epochs', 'the number of epochs must be an integer from 1 to 10000 (got 1.5)'],
    [{ lr: Number.NaN }, 'lr', 'the learning rate must be a number from 0 to 10 (got NaN)'],
    [{ normalize: 'imagenet' }, 'normalize', "the normalisation must be one of auto, model, dataset (got 'imagenet')"],
    [{ flip: 'yes' }, 'flip', "random flipping must be true or false (got 'yes')"],
    [{ maxGradNorm: 1 }, 'maxGradNorm', "unknown training option 'maxGradNorm'"],
  ])('refuse %j naming %s by its meaning', (raw, option, message) => {
    let caught: unknown;
    try {
      parseTrainOptions(raw);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(OptionError);
    expect([(caught as OptionError).option, (caught as Error).message]).toEqual([option, message]);
  });

  it('give one schedule: steps per epoch, total steps under maxSteps and trainLimit, 10% warm-up', () => {
    expect(trainingSchedule(parseTrainOptions({ epochs: 3, batchSize: 32 }), 1000)).toEqual({ trainImages: 1000, stepsPerEpoch: 31, totalSteps: 93, epochs: 3, warmupSteps: 9 });
    expect(trainingSchedule(parseTrainOptions({ epochs: 3, maxSteps: 40, trainLimit: 640, warmupSteps: 0 }), 1000))
      .toEqual({ trainImages: 640, stepsPerEpoch: 20, totalSteps: 40, epochs: 2, warmupSteps: 0 });
    expect(() => trainingSchedule(parseTrainOptions({ batchSize: 64 }), 50)).toThrow('the training split has 50 images, fewer than one batch of 64');
  });
});

describe('run options', () => {
  it('are the training options and the round options; the engine gets its part only', () => {
    const o = parseRunOptions({ epochs: 2, stepsPerRound: 8 }, 3);
    expect([o.epochs, o.stepsPerRound, o.shardsPerRound]).toEqual([2, 8, 1]); // one shard unless asked: workers online change nothing
    expect(parseRunOptions({ shardsPerRound: 'AUTO' }, 3).shardsPerRound).toBe(3);
    expect(parseRunOptions({ shardsPerRound: 'auto' }, 40).shardsPerRound).toBe(16);
    expect(parseRunOptions({ shardsPerRound: 'AUTO' }, 0).shardsPerRound).toBe(1);
    expect(() => parseRunOptions({ shardsPerRound: 'AUTO' })).toThrow("'AUTO' shards per round are counted when a run starts");
    expect(parseRunOptions({}).stepsPerRound).toBe(RUN_DEFAULTS.stepsPerRound);
    expect(trainOptionsOf(o)).toEqual(parseTrainOptions({ epochs: 2 }));
    expect(() => parseRunOptions({ shardsPerRound: 0 })).toThrow('the shards per round must be an integer from 1 to 100000 (got 0)');
  });
});

describe('parameter groups', () => {
  it('put every tensor of the ViT in one group: attention and FFN layers by block, embeddings, the final norm, the head', () => {
    const c = parseVitConfig(preset('vit_micro_patch4_28'));
    const groups = paramSpecs(c).map((s) => [s.name, paramGroup(s.name)] as const);
    expect(groups.filter(([, g]) => g.kind === 'attn' && g.block === 1).map(([n]) => n))
      .toEqual(['blocks.1.norm1.weight', 'blocks.1.norm1.bias', 'blocks.1.attn.qkv.weight', 'blocks.1.attn.qkv.bias', 'blocks.1.attn.proj.weight', 'blocks.1.attn.proj.bias']);
    expect(groups.filter(([, g]) => g.kind === 'embed').map(([n]) => n)).toEqual(['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']);
    expect(layerOf('blocks.3.mlp.fc2.bias')).toEqual({ kind: 'ffn', block: 3 });
    expect(layerOf('norm.weight')).toBeUndefined();
    expect(() => paramGroup('blocks.0.ls1.gamma')).toThrow("'blocks.0.ls1.gamma' is not a parameter of this ViT");
  });
});

describe('shard jobs', () => {
  const job = {
    runId: 'r', round: 2, shardId: 's', attempt: 1, strategy: 'attn-only', numClasses: 10, normalization: { mean: [0.5], std: [0.25] },
    options: { epochs: 2, batchSize: 16 }, trainImages: 640, window: { from: 8, to: 12 }, heartbeatSeconds: 15,
  };

  it('decode with the engine parsing the strategy and the options', () => {
    const d = decodeShardJob(job);
    expect(d.strategy).toEqual({ kind: 'preset', name: 'attn-only' });
    expect(d.options).toEqual(parseTrainOptions({ epochs: 2, batchSize: 16 }));
    expect(expectedUpdateLabel(d)).toEqual({ run: 'r', round: 2, shard: 's', samples: 64 });
  });

  it.each([
    [{ window: { from: 8, to: 8 } }, 'malformed shard job: window: the window is empty'],
    [{ strategy: 'attn-first' }, /malformed shard job: strategy: unknown strategy 'attn-first'/],
    [{ options: { batchSize: -1 } }, 'malformed shard job: options: the batch size must be an integer from 1 to 4096 (got -1)'],
    [{ normalization: { mean: [0.5], std: [0] } }, /malformed shard job: normalization\.std\.0: /],
    [{ attempt: undefined }, /malformed shard job: attempt: /],
    [{ trainImages: 0 }, /malformed shard job: trainImages: /],
  ])('refuse %j saying where', (change, message) => {
    expect(() => decodeShardJob({ ...job, ...change })).toThrow(message);
  });
});
