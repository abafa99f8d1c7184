// k6 load for tests/ops/test_desk_targets.py: the desk's REST mix through the load balancer.
//
// Environment: DB_URL, WS_URL (nginx's two ports), RATE (requests per second, all kinds),
// DURATION (e.g. "60s"), RUN (a prefix making this run's client_ids unique).
// Every request is tagged `kind` (read, write or floor) and `name` (the route); the test
// reads k6's JSON output (`--out json=...`) and classifies each request by its time.
// `floor` is nginx answering by itself (its /metrics refusal): the latency of the path
// from this client through the balancer, measured beside the services in the same run.
import http from "k6/http";

const DB = __ENV.DB_URL;
const WS = __ENV.WS_URL;
const RUN = __ENV.RUN || "run";
const SYMBOLS = ["BTCUSDT", "ETHUSDT"];
const JSON_HEADERS = { headers: { "Content-Type": "application/json" } };

export const options = {
  discardResponseBodies: true,
  scenarios: {
    desk: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 40),
      timeUnit: "1s",
      duration: __ENV.DURATION || "60s",
      preAllocatedVUs: 40,
      maxVUs: 200,
    },
  },
  // Requests are judged by the test, by when they happened; k6's own thresholds stay off.
  summaryTrendStats: ["avg", "p(50)", "p(95)", "p(99)", "max"],
};

function symbol() {
  return SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)];
}

function get(url, name, kind) {
  return http.get(url, { tags: { name: name, kind: kind }, timeout: "10s" });
}

function post(url, body, name) {
  const tags = { name: name, kind: "write", cid: body.client_id };
  const params = Object.assign({ tags: tags, timeout: "10s" }, JSON_HEADERS);
  return http.post(url, JSON.stringify(body), params);
}

function saveSignal() {
  const id = `${RUN}-${__VU}-${__ITER}`;
  const body = { symbol: symbol(), action: "BUY", price: 100 + Math.random(), strategy: "desk", client_id: id };
  post(`${DB}/signals/save`, body, "/signals/save");
}

function trackTrade() {
  const entry = 100 + Math.random();
  const body = {
    symbol: symbol(),
    entry_price: entry,
    exit_price: entry + Math.random() - 0.5,
    strategy: "desk",
    client_id: `${RUN}-t-${__VU}-${__ITER}`,
  };
  post(`${DB}/performance/track`, body, "/performance/track");
}

// Weights out of 100: 30 % writes, 68 % reads, 2 % the nginx floor.
const MIX = [
  [25, saveSignal],
  [5, trackTrade],
  [20, () => get(`${DB}/signals/history?limit=20&symbol=${symbol()}`, "/signals/history", "read")],
  [8, () => get(`${DB}/performance/stats?group_by=strategy`, "/performance/stats", "read")],
  [40, () => get(`${WS}/price/${symbol()}`, "/price/<symbol>", "read")],
  [2, () => get(`${DB}/metrics`, "nginx", "floor")],
];

export default function () {
  let roll = Math.random() * 100;
  for (const [weight, step] of MIX) {
    roll -= weight;
    if (roll < 0) {
      step();
      return;
    }
  }
  MIX[MIX.length - 1][1]();
}
