// Node module hooks for the unit tests: the WIT imports (`stagecraft:...`,
// `wasi:...`) exist only inside a component, so under Node they resolve to
// small recording fakes (calls land in globalThis.__witCalls).
export async function resolve(specifier, context, next) {
  if (/^(stagecraft|wasi):/.test(specifier)) return { url: "witfake:" + specifier, shortCircuit: true };
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith("witfake:")) return next(url, context);
  const rec = (name) => `export const ${name} = (...args) => { (globalThis.__witCalls ||= []).push([${JSON.stringify(name)}, ...args]); };`;
  const source = url.includes("/log@") ? rec("log") : url.includes("/progress@") ? rec("report") : "export {};";
  return { format: "module", source, shortCircuit: true };
}
