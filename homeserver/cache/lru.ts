/**
 * A bounded map that forgets the least recently used entry when full. Caches keyed by user or room
 * must stay bounded without the cliff of wiping everything at N entries (every reader then misses
 * at once). A Map keeps insertion order, so re-inserting on a hit makes the first key the oldest.
 */
export class LruCache<K, V> {
  private entries_ = new Map<K, V>();

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('LruCache capacity must be a positive integer');
  }

  get size(): number {
    return this.entries_.size;
  }

  get(key: K): V | undefined {
    const value = this.entries_.get(key);
    if (value === undefined) return undefined;
    this.entries_.delete(key);
    this.entries_.set(key, value);
    return value;
  }

  has(key: K): boolean {
    return this.entries_.has(key);
  }

  set(key: K, value: V): this {
    if (this.entries_.has(key)) this.entries_.delete(key);
    else if (this.entries_.size >= this.capacity) this.entries_.delete(this.entries_.keys().next().value as K);
    this.entries_.set(key, value);
    return this;
  }

  delete(key: K): boolean {
    return this.entries_.delete(key);
  }

  /** Every entry, least recently used first (reading does not count as a use). */
  entries(): IterableIterator<[K, V]> {
    return this.entries_.entries();
  }

  clear(): void {
    this.entries_.clear();
  }
}
