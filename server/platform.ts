// What every service shares: settings, the state store, object storage, the compute threads, the log.
import { BlobStore } from '../storage';
import { Compute } from './compute';
import { ServerConfig } from './config';
import { StateStore } from './state/store';

export interface Platform {
  readonly config: ServerConfig;
  readonly state: StateStore;
  readonly blobs: BlobStore;
  readonly compute: Compute<'runs'>;
  /** Update checks and aggregation. */
  readonly shardCompute: Compute<'shards'>;
  readonly log: (line: string) => void;
}
