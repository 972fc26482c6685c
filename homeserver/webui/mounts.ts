// Where the built UIs are (UI_DIR, default the server's folder) and whether each is served.
import path from 'node:path';
import type { Config } from '../config.ts';
import type { UiMount } from './static-ui.ts';

export function webUiMounts(config: Pick<Config, 'uiDir' | 'serveAdminUi' | 'serveChatUi'>): UiMount[] {
  return [
    { prefix: '/admin/', dir: path.join(config.uiDir, 'admin-ui', 'dist'), name: 'admin dashboard', off: !config.serveAdminUi },
    { prefix: '/', dir: path.join(config.uiDir, 'chat-ui', 'dist'), name: 'chat app', off: !config.serveChatUi },
  ];
}
