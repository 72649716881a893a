"""``expblip serve``: the face describer behind an HTTP API and a web page.

``batching`` (no web or model imports) gathers concurrent requests into one model call;
``app`` builds the FastAPI application with its limits; ``cli`` loads the model and runs
uvicorn.
"""
