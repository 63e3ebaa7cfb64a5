// Vite and Vitest configuration for Gantry's UI. The build lands in ui/dist, which the Tauri shell
// embeds, with a relative base so it loads from any origin. Tests run in two projects: "node" (unit,
// real WebSocket and core integration tests) and "dom" (component tests, files *.dom.test.ts, jsdom).
import { defineConfig } from "vitest/config";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { svelteTesting } from "@testing-library/svelte/vite";
import { readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8")) as {
  version: string;
};

export default defineConfig({
  base: "./",
  plugins: [svelte()],
  clearScreen: false,
  define: {
    __UI_VERSION__: JSON.stringify(pkg.version),
  },
  server: {
    port: 5173,
    strictPort: true,
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
  },
  test: {
    testTimeout: 20_000,
    hookTimeout: 30_000,
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: ["test/**/*.test.ts"],
          exclude: ["test/**/*.dom.test.ts"],
          environment: "node",
        },
      },
      {
        // Components: Svelte's browser build in jsdom. Kept apart because the `browser` condition
        // would also give the `ws` package its browser stub in the Node tests.
        extends: true,
        plugins: [svelteTesting()],
        test: {
          name: "dom",
          include: ["test/**/*.dom.test.ts"],
          environment: "jsdom",
        },
      },
    ],
  },
});
