// Ambient types for the UI: Vite's client types and the constants vite.config.ts defines.
/// <reference types="svelte" />
/// <reference types="vite/client" />

/** The UI's version from package.json, replaced at build time. */
declare const __UI_VERSION__: string;
