-- Signals and closed trades. Times are UTC epoch microseconds (INTEGER) so that they
-- sort and compare exactly; prices are REAL because SQLite has no decimal type.
CREATE TABLE IF NOT EXISTS signals (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('BUY', 'SELL', 'HOLD')),
    price REAL NOT NULL CHECK (price > 0),
    confidence REAL CHECK (confidence BETWEEN 0 AND 1),
    strategy TEXT,
    timeframe TEXT,
    ts INTEGER NOT NULL,
    metadata TEXT,
    client_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS signals_client_id_key
    ON signals (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS signals_ts_id_idx ON signals (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_symbol_ts_idx ON signals (symbol, ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_strategy_ts_idx ON signals (strategy, ts DESC, id DESC);

CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    entry_price REAL NOT NULL CHECK (entry_price > 0),
    exit_price REAL NOT NULL CHECK (exit_price > 0),
    quantity REAL NOT NULL CHECK (quantity > 0),
    fees REAL NOT NULL CHECK (fees >= 0),
    pnl REAL NOT NULL,
    pnl_percent REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('win', 'loss', 'breakeven')),
    strategy TEXT,
    signal_id INTEGER,
    entry_time INTEGER,
    exit_time INTEGER NOT NULL,
    duration_seconds REAL,
    metadata TEXT,
    client_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS trades_client_id_key
    ON trades (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS trades_exit_idx ON trades (exit_time, id);
CREATE INDEX IF NOT EXISTS trades_symbol_exit_idx ON trades (symbol, exit_time DESC);
CREATE INDEX IF NOT EXISTS trades_strategy_exit_idx ON trades (strategy, exit_time DESC);
