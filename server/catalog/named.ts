// What models and datasets share: found by id or name (NOT_FOUND otherwise), listed, named once.
import { conflict, notFound } from '../errors';
import { Page } from '../state/records';
import type { NamedRepository } from '../state/store';
import { checkName } from './uploads';

export class NamedCatalog<T extends { name: string }> {
  constructor(private readonly repo: NamedRepository<T>, private readonly what: 'model' | 'dataset') {}

  async get(idOrName: string): Promise<T> {
    const found = await this.repo.byIdOrName(idOrName);
    if (!found) throw notFound(`${this.what} '${idOrName}' not found`);
    return found;
  }

  list(search: string | undefined, first: number, offset: number): Promise<Page<T>> {
    return this.repo.list(search, first, offset);
  }

  /** A name a new one may take: well formed and free. */
  async checkNewName(name: string): Promise<void> {
    checkName(name);
    if (await this.repo.byIdOrName(name)) throw conflict(`a ${this.what} named '${name}' exists`);
  }

  protected async insert(record: T): Promise<T> {
    if (!(await this.repo.insert(record))) throw conflict(`a ${this.what} named '${record.name}' exists`);
    return record;
  }
}
