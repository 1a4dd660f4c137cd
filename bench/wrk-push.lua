-- wrk: POST /v1/push to one user ("wrk", one device); every request is a
-- full push (Redis script, render, one notification to the simulator).
-- wrk itself counts non-2xx answers; run.sh checks one answer's "sent":1.
wrk.method = "POST"
wrk.body = '{"to":"wrk","elems":[{"type":"text","text":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
