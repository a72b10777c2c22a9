// Where each kind of object lives. Checkpoints, dataset shards, window packs and accepted shard updates are
// content-addressed (written by the server only, so immutable); a shard's upload slot is named by
// run, shard and attempt, and signed for one PUT by that lease's worker. What only a run's rounds
// need (states, packs, updates) lives under `runs/<id>/`, so that it can go when the run ends.
/** Where shard upload slots live: swept by listing (a slot is needed only while its lease holds). */
export const SLOTS = 'slots';

/** The run, shard and attempt a slot's key names; undefined for another key. */
export function slotOf(key: string): { runId: string; shardId: string; attempt: number } | undefined {
  const m = /^slots\/([^/]+)\/([^/]+)-attempt-(\d+)\.safetensors$/.exec(key);
  return m ? { runId: m[1], shardId: m[2], attempt: Number(m[3]) } : undefined;
}

export const keys = {
  checkpoint: (sha256: string) => `checkpoints/${sha256}.safetensors`,
  datasetShard: (sha256: string) => `datasets/${sha256}.safetensors`,
  runState: (runId: string, round: number) => `runs/${runId}/state-${String(round).padStart(4, '0')}.safetensors`,
  shardUpload: (runId: string, shardId: string, attempt: number) => `${SLOTS}/${runId}/${shardId}-attempt-${attempt}.safetensors`,
  update: (runId: string, sha256: string) => `runs/${runId}/updates/${sha256}.safetensors`,
  windowPack: (runId: string, sha256: string) => `runs/${runId}/windows/${sha256}.safetensors`,
  runFolder: (runId: string) => `runs/${runId}`,
  delta: (runId: string) => `deltas/${runId}.safetensors`,
  merged: (deltaId: string) => `merged/${deltaId}.safetensors`,
  upload: (uploadId: string) => `uploads/${uploadId}`,
};
