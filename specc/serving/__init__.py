"""`specc serve`: a run's model over HTTP. One stage per module:

    server.py    options, uvicorn, signals          app.py       the routes (thin)
    protocol.py  Open Inference Protocol bodies      batcher.py   dynamic batching
    model.py     torch / onnxruntime, tensors        friendly.py  /v1/predict, /v1/generate, the page
    guard.py     token, body size, body time         stats.py     Triton's statistics
"""
