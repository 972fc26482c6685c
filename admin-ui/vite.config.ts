// The admin dashboard, served by the homeserver (and by Caddy) at /admin/.
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  root: import.meta.dirname,
  base: '/admin/',
  plugins: [svelte()],
  // Hashed file names under assets/: served with a year-long cache; index.html is never cached.
  build: { outDir: 'dist', emptyOutDir: true, assetsDir: 'assets' },
  // `vite` in admin-ui/ for development: the API calls go to a homeserver on :8008.
  server: { proxy: { '/_matrix': 'http://127.0.0.1:8008', '/_synapse': 'http://127.0.0.1:8008', '/_super': { target: 'http://127.0.0.1:8008', ws: true } } },
});
