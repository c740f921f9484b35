// Drives the hub's WebSocket API with home-assistant-js-websocket, the client Home Assistant's
// own frontend uses: connect with a long-lived token, subscribe to the entities, toggle a
// light and wait until the subscription shows its new state.
//
// HUB_URL (e.g. http://127.0.0.1:8123) and HUB_TOKEN come from the environment. Exit 0 with a
// one-line summary; exit 1 with the reason on any failure or timeout.

import WebSocket from "ws";
import {
  callService,
  createConnection,
  createLongLivedTokenAuth,
  subscribeEntities,
} from "home-assistant-js-websocket";

// Node 20 has no WebSocket of its own; the library's README polyfills it with `ws`.
globalThis.WebSocket ??= WebSocket;

/** How long each step may take before the check fails; a loaded machine stays well below. */
const STEP_TIMEOUT_MS = 20_000;

function fail(reason) {
  console.error(`ha-js-websocket: FAILED: ${reason}`);
  process.exit(1);
}

function within(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`)),
      STEP_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the entities once `accept(entities)` holds for a subscription update. */
function entitiesWhere(latest, accept) {
  return new Promise((resolve) => {
    const check = () => {
      if (latest.entities && accept(latest.entities)) {
        resolve(latest.entities);
        return true;
      }
      return false;
    };
    if (!check()) {
      latest.waiters.push(check);
    }
  });
}

async function main() {
  const url = process.env.HUB_URL;
  const token = process.env.HUB_TOKEN;
  if (!url || !token) {
    fail("HUB_URL and HUB_TOKEN must be set");
  }

  const auth = createLongLivedTokenAuth(url, token);
  const connection = await within(
    "the connection",
    createConnection({ auth }).catch((code) => {
      throw new Error(`cannot connect (library error code ${code})`);
    }),
  );

  const latest = { entities: undefined, waiters: [] };
  const unsubscribe = subscribeEntities(connection, (entities) => {
    latest.entities = entities;
    latest.waiters = latest.waiters.filter((check) => !check());
  });

  const entities = await within(
    "a light in subscribe_entities",
    entitiesWhere(latest, (entities) =>
      Object.keys(entities).some((id) => id.startsWith("light.")),
    ),
  );
  const lightId = Object.keys(entities)
    .filter((id) => id.startsWith("light."))
    .sort()[0];
  const before = entities[lightId].state;
  if (before !== "on" && before !== "off") {
    fail(`${lightId} is ${JSON.stringify(before)}, neither on nor off`);
  }
  const expected = before === "on" ? "off" : "on";

  await within(
    "light.toggle's result",
    callService(connection, "light", "toggle", undefined, { entity_id: lightId }),
  );
  await within(
    `${lightId} to turn ${expected} in subscribe_entities`,
    entitiesWhere(latest, (entities) => entities[lightId]?.state === expected),
  );

  unsubscribe();
  connection.close();
  console.log(
    `ha-js-websocket: OK: ${Object.keys(latest.entities).length} entities subscribed, ` +
      `${lightId} toggled ${before} -> ${expected} (Home Assistant ${connection.haVersion})`,
  );
  process.exit(0);
}

main().catch((error) => fail(error?.message ?? String(error)));
