// The API's inputs. Values are checked by the services (one place), not here.
import { Field, Float, ID, InputType, Int } from 'type-graphql';
import { GraphQLJSON } from 'graphql-scalars';
import type { RunOptions } from '../protocol/run-options';
import { Aggregation, AngleDirection, DatasetFormat, Normalize, RunKind, RunStatus, SoupMethod, Verification } from './types';

@InputType()
export class RegisterModelInput {
  @Field() name!: string;
  @Field(() => ID, { nullable: true, description: 'An upload holding the safetensors file' }) uploadId?: string;
  @Field({ nullable: true, description: 'A safetensors file the server can read' }) path?: string;
  @Field(() => GraphQLJSON, { nullable: true, description: 'Architecture, when the file carries none (timm or snake_case keys)' }) config?: unknown;
}

@InputType()
export class UploadedFile {
  @Field(() => ID) uploadId!: string;
}

@InputType()
export class ImportDatasetInput {
  @Field() name!: string;
  @Field(() => DatasetFormat) format!: DatasetFormat;
  @Field({ nullable: true, description: 'A directory the server can read' }) path?: string;
  @Field(() => [UploadedFile], { nullable: true, description: 'Uploads named as the format expects (train-images-idx3-ubyte.gz, data_batch_1.bin, ...)' }) uploads?: UploadedFile[];
  @Field(() => Int, { nullable: true, description: 'Keep a seeded subset of the training split' }) trainLimit?: number;
  @Field(() => Int, { nullable: true }) testLimit?: number;
  @Field({ nullable: true, description: 'Its runs never admit volunteers: only registered workers read its records (default false)' }) private?: boolean;
  @Field(() => Int, { nullable: true, description: 'FOLDER: photos are stored at this square size, shorter side resized, centre-cropped (default 256)' })
  storageSize?: number;
  @Field({ nullable: true, description: 'FOLDER: skip files that do not decode (and name them in source) rather than fail (default false)' }) skipBad?: boolean;
  @Field(() => Float, { nullable: true, description: 'FOLDER without train/val folders or a split column: the share of each class tested (default 0.2)' })
  testFraction?: number;
}

/** The engine's TrainOptions and the platform's round options (protocol/run-options.ts), by their own names. */
@InputType({ description: 'Training options (unset: the defaults, as `partune finetune` has them) and how the steps are cut into rounds and shards' })
export class HyperParametersInput implements Partial<Record<keyof RunOptions, unknown>> {
  @Field(() => Int, { nullable: true }) epochs?: number;
  @Field(() => Int, { nullable: true, description: 'Stop after this many optimizer steps (the schedule spans them)' }) maxSteps?: number;
  @Field(() => Int, { nullable: true }) batchSize?: number;
  @Field(() => Float, { nullable: true }) lr?: number;
  @Field(() => Float, { nullable: true, description: 'Where the cosine schedule ends' }) minLr?: number;
  @Field(() => Int, { nullable: true, description: 'Linear warm-up steps (default: 10% of all steps)' }) warmupSteps?: number;
  @Field(() => Float, { nullable: true }) weightDecay?: number;
  @Field(() => Float, { nullable: true }) labelSmoothing?: number;
  @Field(() => Float, { nullable: true, description: 'Clip the global gradient norm to this (0: off)' }) clipGrad?: number;
  @Field(() => Int, { nullable: true }) seed?: number;
  @Field(() => Int, { nullable: true }) cropPadding?: number;
  @Field({ nullable: true }) flip?: boolean;
  @Field({
    nullable: true,
    description:
      "timm's random-resized crop (scale 0.08-1, ratio 3/4-4/3) to the model's size; " + "unset: on when the images are stored larger than the model's input",
  })
  resizedCrop?: boolean;
  @Field(() => Int, { nullable: true, description: "Split each step's batch into pieces of this many images (gradient accumulation); unset: the whole batch" })
  microBatch?: number;
  @Field(() => Int, { nullable: true, description: 'Train on a seeded subset of this many images' }) trainLimit?: number;
  @Field(() => Int, { nullable: true, description: 'Test on a seeded subset of this many images (the CLI\'s --test-limit)' }) testLimit?: number;
  @Field(() => Int, { nullable: true, deprecationReason: 'Use testLimit' }) evalLimit?: number;
  @Field(() => Normalize, { nullable: true }) normalize?: Normalize;
  @Field(() => Int, { nullable: true, description: 'Optimizer steps per round (default 50)' }) stepsPerRound?: number;
  @Field(() => Int, { nullable: true, description: 'Shards per round (default 1: the result depends on the options alone)' }) shardsPerRound?: number;
  @Field({ nullable: true, description: 'Shards per round = the workers online when the run starts (at most 16), recorded as shardsPerRound' }) autoShards?: boolean;
  @Field(() => Aggregation, { nullable: true, description: 'How a round with several shards is combined (default FEDAVG)' }) aggregation?: Aggregation;
  @Field(() => Verification, { nullable: true, description: 'How shard results are verified (default SPOT_CHECK)' }) verification?: Verification;
  @Field(() => Int, { nullable: true, description: 'Agreeing results a shard needs under QUORUM (2 to 5, default 2)' }) quorum?: number;
  @Field(() => Float, { nullable: true, description: "The least rate at which a trusted worker's results are checked under SPOT_CHECK (default 0.05)" }) spotCheckRate?: number;
  @Field({
    nullable: true,
    description:
      "Volunteers' tabs may lease its shards, and so download its state and training records " +
      '(default false: registered workers only; never on a private dataset)',
  })
  admitVolunteers?: boolean;
}

@InputType()
export class StartRunInput {
  @Field({ description: 'Model id or name' }) model!: string;
  @Field({ description: 'Dataset id or name' }) dataset!: string;
  @Field({ description: 'A preset (attn-only, ffn-only, first-half, ...) or a custom strategy as JSON' }) strategy!: string;
  @Field(() => HyperParametersInput, { nullable: true }) hyperParameters?: HyperParametersInput;
  @Field({ nullable: true, description: 'Anyone may follow its progress (a volunteer page); default false' }) public?: boolean;
}

@InputType()
export class AngleProbeInput {
  @Field({ description: 'Model id or name' }) model!: string;
  @Field({ description: 'Dataset id or name' }) dataset!: string;
  @Field(() => Int, { nullable: true, description: 'Probe length in optimizer steps (a short probe) ...' }) probeSteps?: number;
  @Field(() => Int, { nullable: true, description: '... or in epochs (default 1)' }) probeEpochs?: number;
  @Field(() => HyperParametersInput, { nullable: true, description: 'Of the probe\'s full fine-tuning' }) hyperParameters?: HyperParametersInput;
  @Field(() => AngleDirection, { defaultValue: AngleDirection.LARGEST }) direction!: AngleDirection;
  @Field(() => Int, { nullable: true, description: 'Layers per group (default: half the depth)' }) topK?: number;
  @Field(() => Int, { nullable: true, description: 'Or: the largest K whose strategy fits this many tuned parameters' }) budget?: number;
  @Field({ nullable: true, description: 'Name to store the strategy under (usable by startRun)' }) name?: string;
}

@InputType()
export class CreateSoupInput {
  @Field(() => [ID], { description: 'Finished runs of one model and dataset' }) runs!: string[];
  @Field(() => SoupMethod, { defaultValue: SoupMethod.GREEDY }) method!: SoupMethod;
  @Field(() => Int, { nullable: true, description: 'Held-out images taken from the test split (default: half)' }) heldOut?: number;
  @Field({ nullable: true }) name?: string;
}

@InputType()
export class RunFilter {
  @Field(() => RunStatus, { nullable: true }) status?: RunStatus;
  @Field(() => RunKind, { nullable: true }) kind?: RunKind;
  @Field({ nullable: true }) model?: string;
  @Field({ nullable: true }) dataset?: string;
}

@InputType({ description: "One backend's training speed on the measured model" })
export class BackendTimingInput {
  @Field() backend!: string;
  @Field() detail!: string;
  @Field(() => Float, { nullable: true, description: 'Training img/s; null where not timed' }) imagesPerSecond?: number;
  @Field({ nullable: true, description: 'Why it was not timed or not chosen' }) note?: string;
}

@InputType({ description: 'How a worker chose its TensorFlow.js backend, sent with its claims' })
export class BackendChoiceInput {
  @Field() chosen!: string;
  @Field() detail!: string;
  @Field({ description: 'forced, measured, remembered or only one' }) how!: string;
  @Field({ nullable: true, description: 'The model shape the timings were measured on' }) model?: string;
  @Field(() => [BackendTimingInput]) timings!: BackendTimingInput[];
}
