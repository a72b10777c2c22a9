// What every service shares: settings, the database, object storage, the compute thread, events.
import { Db } from './db';
import { BlobStore } from '../storage';
import { Compute } from './compute';
import { PubSub } from './events';
import { ServerConfig } from './config';

export interface Platform {
  readonly config: ServerConfig;
  readonly db: Db;
  readonly store: BlobStore;
  readonly compute: Compute;
  readonly pubSub: PubSub;
  readonly log: (line: string) => void;
}
