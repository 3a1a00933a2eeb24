"""`glmv serve`: an OpenAI-compatible HTTP server over the same Session the CLI uses.

protocol.py (the wire format), chat.py (a request -> a worker job -> JSON or server-sent events),
worker.py (the model threads and their bounded queue), errors.py (exceptions -> 4xx/5xx objects),
app.py (the FastAPI routes), run.py (load the model, start uvicorn). The CLI imports this lazily.
"""
