// Fails when the committed build (sync/static/sync/connection-manager.js and
// .d.ts) differs from a fresh build of client/src: someone edited the source
// without `npm run build`, or edited the built file by hand.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const client = join(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(client, "..", "sync", "static", "sync");
const files = ["connection-manager.js", "connection-manager.d.ts"];
const fresh = mkdtempSync(join(tmpdir(), "connection-manager-"));
try {
  const tsc = join(client, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.json", "--outDir", fresh], {
    cwd: client,
    stdio: "inherit",
  });
  const stale = files.filter(
    (name) => !readFileSync(join(fresh, name)).equals(readFileSync(join(committed, name))),
  );
  if (stale.length) {
    console.error(`The committed build differs from the source (${stale.join(", ")}):`);
    console.error("run `cd client && npm run build` and commit the result.");
    process.exit(1);
  }
  console.log("The committed build matches the source.");
} finally {
  rmSync(fresh, { recursive: true, force: true });
}
