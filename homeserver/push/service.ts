import type { AccountDataService } from '../accountdata/service.ts';
import { Topic } from '../subscriptions/topic.ts';
import { normalize, toContent, type Ruleset } from './rules.ts';

const TYPE = 'm.push_rules';

/**
 * A user's push rules, kept as their `m.push_rules` global account data so that /sync carries
 * them like any other account data. Written the first time they are read or changed.
 *
 * Every change is one read-modify-write of the account data entry on one connection (the account
 * data store's `update`): nothing here holds a pooled connection while waiting for another, which
 * is what stalled the whole server when ~20 users edited their rules at once.
 */
export class PushRulesService {
  constructor(private accountData: AccountDataService) {}

  /** A user's rules changed (push evaluation drops what it compiled of them). */
  readonly changed = new Topic<string>('push rules changed');

  async rules(userId: string): Promise<Ruleset> {
    const stored = await this.accountData.get(userId, '', TYPE);
    if (stored) return normalize(stored, userId);
    return normalize(await this.writeDefaults(userId), userId);
  }

  /** Stores the default rules unless the user has rules already; returns what is stored. */
  async writeDefaults(userId: string): Promise<Record<string, unknown> | undefined> {
    const stored = await this.accountData.update(userId, '', TYPE, (current) => (current ? undefined : toContent(normalize(undefined, userId))));
    this.changed.publishSync(userId);
    return stored;
  }

  /** A user's rules as stored (the defaults when they have none yet), without writing anything. */
  async storedRules(userId: string): Promise<Ruleset> {
    return normalize(await this.accountData.get(userId, '', TYPE), userId);
  }

  /** Applies `change` to the user's rules and stores them, unless it returns false. */
  async update(userId: string, change: (rules: Ruleset) => boolean | void): Promise<void> {
    await this.accountData.update(userId, '', TYPE, (current) => {
      const rules = normalize(current, userId);
      return change(rules) === false ? undefined : toContent(rules);
    });
    this.changed.publishSync(userId);
  }
}
