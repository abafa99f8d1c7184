-- wrk script: POST one signal per request to /signals/save; the summary line of report.lua.
wrk.method = "POST"
wrk.body = '{"symbol":"BTCUSDT","action":"BUY","price":101.5,"confidence":0.5,"strategy":"bench","timeframe":"1m"}'
wrk.headers["Content-Type"] = "application/json"
dofile(debug.getinfo(1).source:match("@(.*/)") .. "report.lua")
