// Runs the field-bus node's code under real MicroPython: its WebAssembly port in Node.js.
//
//   node tests/edge/node/micropython_runner.mjs tests   every test_node_*.py, as pytest would
//   node tests/edge/node/micropython_runner.mjs ram     the node's RAM after start, as JSON
//
// The node's modules (edge/node/*.py but the board, boot and host-only files) and the
// shared tests are copied into the interpreter's filesystem under /lib, so they import
// as edge.node.* and tests.edge.node.* exactly as on CPython. The package comes from
// package-lock.json (`npm ci` at the repository root).
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const HOST_ONLY = new Set(["board.py", "main.py", "simulate.py"]);
const mode = process.argv[2] || "tests";

let out = "";
const mp = await loadMicroPython({
  stdout: (text) => { out += text + "\n"; process.stdout.write(text + "\n"); },
  stderr: (text) => process.stderr.write(text + "\n"),
});

function copy(fromDir, toDir, keep) {
  mp.FS.mkdirTree(toDir);
  for (const name of readdirSync(join(root, fromDir))) {
    if (name.endsWith(".py") && keep(name)) {
      mp.FS.writeFile(`${toDir}/${name}`, readFileSync(join(root, fromDir, name)));
    }
  }
}

copy("edge/node", "/lib/edge/node", (name) => !HOST_ONLY.has(name));
mp.FS.mkdirTree("/lib/tests/edge");
mp.FS.writeFile("/lib/tests/__init__.py", "");
mp.FS.writeFile("/lib/tests/edge/__init__.py", "");
copy("tests/edge/node", "/lib/tests/edge/node",
  (name) => name === "__init__.py" || name === "portable.py" || name === "memory_client.py"
    || name.startsWith("test_node_"));

const TESTS = `
import sys, os
passed = failed = 0
names = sorted(n[:-3] for n in os.listdir("/lib/tests/edge/node") if n.startswith("test_node_"))
for name in names:
    module = __import__("tests.edge.node." + name, None, None, ["x"])
    for attr in sorted(dir(module)):
        fn = getattr(module, attr)
        if attr.startswith("test_") and callable(fn):
            try:
                fn()
                passed += 1
            except Exception as exc:
                failed += 1
                print("FAILED", name + "::" + attr)
                sys.print_exception(exc)
print(sys.implementation.name, ".".join(str(v) for v in sys.implementation.version[:3]))
print(str(passed) + " passed, " + str(failed) + " failed")
`;

const RAM = `
import gc, json, sys
gc.collect()
base = gc.mem_alloc()
from tests.edge.node.memory_client import started_node
link = started_node("/tmp")
gc.collect()
used = gc.mem_alloc() - base
print(json.dumps({"micropython": ".".join(str(v) for v in sys.implementation.version[:3]),
                  "heap_bytes_after_start": used, "level": link.level, "mode": link.mode,
                  "connected": link.connected}))
`;

try {
  mp.runPython(mode === "ram" ? RAM : TESTS);
} catch (err) {
  process.stderr.write(String(err.message || err) + "\n");
  process.exit(2);
}
if (mode === "tests") {
  const match = out.match(/(\d+) passed, (\d+) failed/);
  process.exit(match && match[2] === "0" && match[1] !== "0" ? 0 : 1);
}
