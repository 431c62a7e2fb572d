// Loads ../stagecraft.js under Node with the WIT imports faked (see wit-hooks.mjs).
import { register } from "node:module";
register("./wit-hooks.mjs", import.meta.url);
export const sdk = await import("../stagecraft.js");
export const witCalls = () => (globalThis.__witCalls ||= []);
