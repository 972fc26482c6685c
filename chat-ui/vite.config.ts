// The chat app, served by the homeserver (and by Caddy) at /.
import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  plugins: [svelte()],
  // Hashed file names under assets/: served with a year-long cache; index.html is never cached.
  // matrix-js-sdk is one ~1 MB chunk (280 KB gzip) and the Rust crypto wasm 7.8 MB (2 MB gzip, fetched
  // after sign-in): known sizes (README "Chat client"), not a warning at every build.
  build: { outDir: 'dist', emptyOutDir: true, assetsDir: 'assets', chunkSizeWarningLimit: 1500 },
  // `vite` in chat-ui/ for development: the API calls go to a homeserver on :8008.
  server: { proxy: { '/_matrix': 'http://127.0.0.1:8008', '/_synapse': 'http://127.0.0.1:8008', '/_super': { target: 'http://127.0.0.1:8008', ws: true } } },
});
