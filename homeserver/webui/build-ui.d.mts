export declare const APPS: string[];
export declare function isStale(app: string, base?: string): boolean;
export declare function buildApps(opts?: { force?: boolean; base?: string; log?: (line: string) => void }): Promise<string[]>;
