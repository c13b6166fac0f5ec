"""`ddnn serve`: a switchable file (`ddnn export --switchable`) behind HTTP, depth chosen per batch.

policy.py decides the depth (pure logic), batching.py queues requests and runs them in batches on one
worker thread, inputs.py turns a request body into images, metrics.py holds the Prometheus metrics,
app.py is the FastAPI app and server.py opens the file and runs uvicorn.
"""
