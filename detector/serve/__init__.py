"""`detector serve`: a synchronous HTTP decision service on the same engine and shared store as the workers.

`app` (the Litestar application: the contract's endpoints, errors, auth), `batcher` (concurrent calls share
engine calls), `auth` (bearer tokens), `metrics`, and `server` (uvicorn, SIGTERM).
"""
