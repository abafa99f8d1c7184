// PM2 process file: both Sardag services under gunicorn.
//
//   npm ci                                  # installs pm2 (package-lock.json)
//   npx pm2 start ecosystem.config.js       # start both
//   npx pm2 status | logs | reload ...
//   npx pm2 delete ecosystem.config.js      # stop both
//   FEED=fake npx pm2 start ecosystem.config.js   # offline: the fake exchange (tools/fake-exchange) as a
//                                           # third app, websocket-streaming fed by it
//
// gunicorn is the process PM2 watches (`interpreter: "none"`, fork mode, one instance);
// gunicorn forks its own workers. The Python environment is the repository's .venv
// (README install step); SARDAG_VENV points elsewhere. This file is evaluated by the pm2
// command, so these variables are read from the shell that runs `pm2 start`:
//   SARDAG_VENV, SARDAG_LOG_DIR, SARDAG_RUN_DIR,
//   DATABASE_SERVICE_PORT (5020), DATABASE_SERVICE_WORKERS (2),
//   WEBSOCKET_STREAMING_PORT (5021), WEBSOCKET_STREAMING_WORKERS (1), FEED (fake), FAKE_PORT (9443).
// Everything else (DATABASE_URL, REDIS_URL, API_KEY, ...) comes from `.env` in the
// repository root or from that shell's environment, which PM2 passes on.
// Rate limits are exact with any worker count: on Redis with REDIS_URL, else database-
// service's workers share a store on this host that gunicorn creates at start (its log
// says "rate limits: ..."); websocket-streaming runs one worker without Redis.
"use strict";

const fs = require("fs");
const path = require("path");

const root = __dirname;
const venv = path.resolve(root, process.env.SARDAG_VENV || ".venv");
const gunicorn = path.join(venv, "bin", "gunicorn");
const logDir = path.resolve(root, process.env.SARDAG_LOG_DIR || "logs");
// Per-service prometheus_client multiprocess directories. gunicorn's on_starting hook
// (shared/gunicorn_hooks.py) empties the directory at every start, so a restart never
// reports the previous run's counters.
const runDir = path.resolve(root, process.env.SARDAG_RUN_DIR || path.join("data", "run"));

function service(name, folder, module, port, workers, extraEnv = {}) {
  const metricsDir = path.join(runDir, name, "metrics");
  fs.mkdirSync(metricsDir, { recursive: true });
  fs.mkdirSync(logDir, { recursive: true });
  return {
    name,
    script: gunicorn,
    args: ["-c", `${folder}/gunicorn.conf.py`, `${module}:create_app()`],
    interpreter: "none",
    exec_mode: "fork",
    instances: 1,
    cwd: root,
    env: {
      PYTHONUNBUFFERED: "1",
      PYTHONPATH: [root, path.join(root, folder)].join(path.delimiter),
      PORT: String(port),
      WEB_CONCURRENCY: String(workers),
      PROMETHEUS_MULTIPROC_DIR: metricsDir,
      ...extraEnv,
    },
    autorestart: true,
    max_restarts: 10,
    min_uptime: "10s",
    restart_delay: 2000,
    exp_backoff_restart_delay: 200,
    // gunicorn shuts down gracefully on SIGTERM; SIGINT is its quick shutdown. PM2 7 sends
    // its daemon's PM2_KILL_SIGNAL (SIGINT by default) and ignores kill_signal, so the
    // services' gunicorn hooks make SIGINT graceful when PM2 started them (shared/gunicorn_hooks.py).
    // Give in-flight requests gunicorn's graceful_timeout before SIGKILL, and signal only
    // the master: it drains and stops its own workers.
    kill_signal: "SIGTERM",
    kill_timeout: 35000,
    treekill: false,
    out_file: path.join(logDir, `${name}.out.log`),
    error_file: path.join(logDir, `${name}.err.log`),
    merge_logs: true,
    time: true,
  };
}

const env = process.env;
const fake = env.FEED === "fake";
const fakePort = String(env.FAKE_PORT || 9443);

// FEED=fake: the fake exchange `make run-offline` uses, as an app of its own (no internet).
function fakeExchange() {
  fs.mkdirSync(logDir, { recursive: true });
  return {
    name: "fake-exchange",
    // the script run.sh uses too (it names the module); it execs Python, so PM2 signals the server
    script: path.join(root, "scripts", "fake-exchange.sh"),
    args: ["--port", fakePort],
    interpreter: "none",
    exec_mode: "fork",
    instances: 1,
    cwd: root,
    env: {
      PYTHONUNBUFFERED: "1",
      SARDAG_VENV: venv,
    },
    autorestart: true,
    kill_signal: "SIGTERM",
    out_file: path.join(logDir, "fake-exchange.out.log"),
    error_file: path.join(logDir, "fake-exchange.err.log"),
    merge_logs: true,
    time: true,
  };
}

const feed = fake
  ? { BINANCE_WS_URL: `ws://127.0.0.1:${fakePort}`, BINANCE_REST_URL: `http://127.0.0.1:${fakePort}` }
  : {};

module.exports = {
  apps: [
    ...(fake ? [fakeExchange()] : []),
    service(
      "database-service",
      "database-service",
      "database_service",
      env.DATABASE_SERVICE_PORT || 5020,
      env.DATABASE_SERVICE_WORKERS || 2,
    ),
    service(
      "websocket-streaming",
      "websocket-streaming",
      "websocket_streaming",
      env.WEBSOCKET_STREAMING_PORT || 5021,
      env.WEBSOCKET_STREAMING_WORKERS || 1,
      feed,
    ),
  ],
};
