// Where each kind of object lives in the bucket. Checkpoints and dataset shards are
// content-addressed; run objects are named by run, round and shard attempt.
export const keys = {
  checkpoint: (sha256: string) => `checkpoints/${sha256}.safetensors`,
  datasetShard: (sha256: string) => `datasets/${sha256}.safetensors`,
  runState: (runId: string, round: number) => `runs/${runId}/state-${String(round).padStart(4, '0')}.safetensors`,
  shardUpdate: (runId: string, shardId: string, attempt: number) => `runs/${runId}/updates/${shardId}-attempt-${attempt}.safetensors`,
  delta: (runId: string) => `deltas/${runId}.safetensors`,
  merged: (deltaId: string) => `merged/${deltaId}.safetensors`,
  upload: (uploadId: string) => `uploads/${uploadId}`,
};
