// Where each kind of object lives. Checkpoints, dataset shards, window packs and accepted shard updates are
// content-addressed (written by the server only, so immutable); a shard's upload slot is named by
// run, shard and attempt, and signed for one PUT by that lease's worker.
export const keys = {
  checkpoint: (sha256: string) => `checkpoints/${sha256}.safetensors`,
  datasetShard: (sha256: string) => `datasets/${sha256}.safetensors`,
  runState: (runId: string, round: number) => `runs/${runId}/state-${String(round).padStart(4, '0')}.safetensors`,
  shardUpload: (runId: string, shardId: string, attempt: number) => `runs/${runId}/uploads/${shardId}-attempt-${attempt}.safetensors`,
  update: (sha256: string) => `updates/${sha256}.safetensors`,
  windowPack: (sha256: string) => `windows/${sha256}.safetensors`,
  delta: (runId: string) => `deltas/${runId}.safetensors`,
  merged: (deltaId: string) => `merged/${deltaId}.safetensors`,
  upload: (uploadId: string) => `uploads/${uploadId}`,
};
