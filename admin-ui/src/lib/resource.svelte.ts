// One thing a page reads from the API: loading, its data or an error (with a retry), never an endless spinner
// (api() gives up after its timeout).
import { errorText } from './api.ts';

export class Resource<T> {
  data = $state<T | null>(null);
  error = $state<string | null>(null);
  loading = $state(false);
  private seq = 0;

  constructor(private fetcher: () => Promise<T>) {}

  async load(): Promise<void> {
    const mine = ++this.seq;
    this.loading = true;
    this.error = null;
    try {
      const d = await this.fetcher();
      if (mine === this.seq) this.data = d;
    } catch (err) {
      if (mine === this.seq) this.error = errorText(err);
    } finally {
      if (mine === this.seq) this.loading = false;
    }
  }
}
