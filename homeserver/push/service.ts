import type { AccountDataStore } from '../accountdata/store.ts';
import type { PushRuleLock } from './store.ts';
import { normalize, toContent, type Ruleset } from './rules.ts';

const TYPE = 'm.push_rules';

/**
 * A user's push rules, kept as their `m.push_rules` global account data so that /sync carries
 * them like any other account data. Written the first time they are read or changed.
 */
export class PushRulesService {
  constructor(private accountData: AccountDataStore, private lock: PushRuleLock) {}

  async rules(userId: string): Promise<Ruleset> {
    const stored = await this.accountData.get(userId, '', TYPE);
    if (stored) return normalize(stored, userId);
    return this.lock.run(userId, async () => {
      const again = await this.accountData.get(userId, '', TYPE);
      const rules = normalize(again, userId);
      if (!again) await this.accountData.put(userId, '', TYPE, toContent(rules));
      return rules;
    });
  }

  /** Applies `change` to the user's rules and stores them, unless it returns false. */
  async update(userId: string, change: (rules: Ruleset) => boolean | void): Promise<void> {
    await this.lock.run(userId, async () => {
      const rules = normalize(await this.accountData.get(userId, '', TYPE), userId);
      if (change(rules) === false) return;
      await this.accountData.put(userId, '', TYPE, toContent(rules));
    });
  }
}
